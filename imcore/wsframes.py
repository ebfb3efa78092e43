"""WebSocket frames as bytes (RFC 6455 §5.2), for either end of a connection.

The server frames its pushes here (`server.websocket.preframe`); the raw client
(`imcore.wsclient`) and the benchmarks' floor server (`tools/floor.py`) build and parse
their frames here too. Pure: bytes in, bytes out; no socket, no trio (tests/test_layers.py).
The server's own reader of client frames is `server.websocket.Reader`, which hands
everything unusual to wsproto; this module has no such judge and checks nothing: it is for
peers that send well-formed frames.

A client masks its frames (§5.3) here with a zero key: a valid mask that leaves the payload
as it is, so masking costs no copy. The parser unmasks any key. Frame and parse are hot
paths (a push is framed once per encoding; a load generator frames and parses every
message): one call per frame built and one per buffer parsed, with no copy of a payload
beyond the slice that takes it out of the buffer.
"""

from __future__ import annotations

import struct

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: The masking key of every frame built here (§5.3 wants one, and lets it be any value).
ZERO_MASK = b"\0\0\0\0"


def frame(
    payload: bytes, opcode: int = OP_BINARY, *, masked: bool = False, fin: bool = True
) -> bytes:
    """One frame of `payload`, final unless `fin` is false.

    Args:
        payload: the frame's payload, as it should arrive.
        opcode: `OP_TEXT`, `OP_BINARY`, a control opcode, or `OP_CONT` for a fragment.
        masked: as a client must send it (with `ZERO_MASK`); unmasked, as a server must.
        fin: false for a fragment that more fragments follow.
    """
    n = len(payload)
    first = 0x80 | opcode if fin else opcode
    second = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, second | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, second | 126, n)
    else:
        head = struct.pack("!BBQ", first, second | 127, n)
    return head + ZERO_MASK + payload if masked else head + payload


def parse(buf: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """The whole frames at the start of `buf`, masked or not.

    Returns:
        Each frame as (opcode, payload), the payload unmasked; and how many bytes of `buf`
        they took (the caller drops them; a partial frame after them waits for more).
    """
    frames: list[tuple[int, bytes]] = []
    pos, end = 0, len(buf)
    while end - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        n, head = b1 & 0x7F, 2
        if n == 126:
            if end - pos < 4:
                break
            n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
        elif n == 127:
            if end - pos < 10:
                break
            n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
        start = pos + head + 4 if b1 & 0x80 else pos + head
        stop = start + n
        if stop > end:
            break
        if b1 & 0x80:
            key = bytes(buf[start - 4 : start]) * (n // 4 + 1)
            raw = int.from_bytes(buf[start:stop], "big")
            payload = (raw ^ int.from_bytes(key[:n], "big")).to_bytes(n, "big")
        else:
            payload = bytes(buf[start:stop])
        frames.append((b0 & 0x0F, payload))
        pos = stop
    return frames, pos
