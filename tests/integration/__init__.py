"""Integration tests: the protocol end to end over real loopback sockets and a real server.

Rules: 127.0.0.1 and port 0 only; a `fail_after` on every test; never sleep to wait, await
the frame instead; no MockClock with real sockets (time-dependent behaviour is tested in
tests/server over in-memory streams); assert on frames, not on logs or internals.
"""
