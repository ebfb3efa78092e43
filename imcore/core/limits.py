"""The settings the core enforces, with the defaults of the spec.

Pure data: it knows nothing of TOML, the environment or flags (see `imcore.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Limits:
    """Protocol limits. Every field is shown to clients in `welcome.limits`."""

    max_frame: int = 262_144  # spec §10: bigger frames close with 1009
    max_body: int = 65_536  # spec §4: in the connection's encoding
    max_devices: int = 10  # spec §3
    max_group_members: int = 100_000  # spec §5
    retain_messages: int = 0  # newest events kept per conversation (0: all)
    retain_days: int = 0  # days events are kept (0: forever)
    receipt_fanout_max: int = 100  # spec §8: read receipts and typing skip bigger groups
    send_rate: float = 50.0  # spec §10: sends per second per connection ...
    send_burst: int = 100  # ... with this bucket size
    sync_limit: int = 100  # spec §8: default page size
    sync_limit_max: int = 1000  # spec §8: larger limits are clamped to this
    heartbeat_ms: int = 20_000  # spec §10
    hello_timeout_ms: int = 10_000  # spec §3
    close_timeout_ms: int = 30_000  # a closing client's time to read what is in flight and answer
    resend_ms: int = 5_000  # spec §8
    resend_max: int = 4  # spec §8
    abuse_errors: int = 100  # spec §10: more than this many per minute close with 4002
    max_watch: int = 1_000  # users one connection may watch at once
    max_connections: int = 0  # 0: as many as the open-file limit allows (set at start)
    outbox_frames: int = 4096  # spec §10: frames queued for a connection before 4008 ...
    outbox_bytes: int = 8 * 1024 * 1024  # ... or bytes
    max_title: int = 256  # chars in a group title

    def to_wire(self) -> dict[str, object]:
        # Every hello sends these; `dataclasses.asdict` deep-copies and cost 170 µs a call.
        return {name: getattr(self, name) for name in _NAMES}


_NAMES = tuple(f.name for f in fields(Limits))
