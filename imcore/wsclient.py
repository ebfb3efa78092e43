"""A minimal, fast WebSocket client (RFC 6455, client side only), for the load generators
in tools/ and for the tests that need a client that does exactly what they say.

A load generator must not be slower than the server it measures. trio-websocket spends
tens of microseconds per message; this client parses server frames straight from the
socket buffer (`wsframes.parse`) and masks its own frames with a zero key (a valid mask
that leaves the payload as is), so a generator process can keep up with many times more
messages. On a socket it reads and writes as the server does: a read waits for the socket
first (trio's `receive_some` tries it first, and a client waiting for its next message
mostly finds nothing), and a write goes straight to a socket with room (`write_some`, which
the server's writer uses too). Pings are answered unless `answer_pings` is false;
permessage-deflate is never offered. It checks nothing the server sends: it is for load
and for tests, not for peers it cannot trust.
"""

from __future__ import annotations

import base64
import os
import struct

import trio

from .wsframes import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, frame, parse


def write_some(fd: int, data: bytes) -> int:
    """Write what the non-blocking socket `fd` takes now; how many bytes that was.

    Raises:
        trio.BrokenResourceError: the connection is lost.
    """
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise trio.BrokenResourceError(str(exc)) from exc


class RawWebSocket:
    """A connected client WebSocket on a trio stream."""

    def __init__(self, stream: trio.abc.Stream, buffered: bytes) -> None:
        self.stream = stream
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._buf = bytearray(buffered)
        self.closed_code: int | None = None
        self.answer_pings = True
        self.pings = 0
        self._sending = trio.StrictFIFOLock()  # pongs from the reader, sends from the sender

    async def _send_all(self, data: bytes) -> None:
        if self._fd >= 0 and not self._sending.locked():
            sent = write_some(self._fd, data)
            if sent == len(data):
                return
            data = data[sent:]
        async with self._sending:
            await self.stream.send_all(data)

    async def _read(self) -> bytes:
        if self._fd < 0:
            return bytes(await self.stream.receive_some(1 << 18))
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, 1 << 18)
            except BlockingIOError:
                continue
            except OSError:
                return b""  # reset: read as the end

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str = "/ws", subprotocol: str | None = None
    ) -> RawWebSocket:
        """Connect to `host:port` and do the opening handshake for `path`."""
        stream = await trio.open_tcp_stream(host, port)
        return await cls.handshake(stream, f"{host}:{port}", path, subprotocol)

    @classmethod
    async def handshake(
        cls, stream: trio.abc.Stream, host: str, path: str = "/ws", subprotocol: str | None = None
    ) -> RawWebSocket:
        """Upgrade an open stream (TCP, or in-memory in tests) to a WebSocket."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            response += chunk
        head, _, rest = response.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            await stream.aclose()
            raise ConnectionError(f"handshake refused: {status.decode(errors='replace')}")
        return cls(stream, rest)

    async def send(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        """Send one message (or control frame) in one frame."""
        await self._send_all(frame(payload, opcode, masked=True))

    async def send_many(self, payloads: list[bytes], opcode: int = OP_BINARY) -> None:
        """Send a frame for each payload, all in one write."""
        await self._send_all(b"".join(frame(p, opcode, masked=True) for p in payloads))

    async def receive(self) -> list[bytes]:
        """Every whole data message available after at least one more read.

        Raises:
            ConnectionError: the server closed the connection (`closed_code` is set).
        """
        while True:
            messages, pongs = self._parse()
            if pongs:
                await self._send_all(pongs)
            if messages:
                return messages
            if self.closed_code is not None:
                raise ConnectionError(f"closed by the server ({self.closed_code})")
            chunk = await self._read()
            if not chunk:
                raise ConnectionError(f"closed by the server ({self.closed_code})")
            self._buf += chunk

    def _parse(self) -> tuple[list[bytes], bytes]:
        frames, used = parse(self._buf)
        del self._buf[:used]
        out: list[bytes] = []
        replies: list[bytes] = []
        for opcode, payload in frames:
            if opcode in (OP_TEXT, OP_BINARY):
                out.append(payload)  # the server never fragments
            elif opcode == OP_PING:
                self.pings += 1
                if self.answer_pings:
                    replies.append(frame(payload, OP_PONG, masked=True))
            elif opcode == OP_CLOSE:
                self.closed_code = (
                    struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                )
        return out, b"".join(replies)

    async def aclose(self) -> None:
        """Close the stream, without a closing handshake."""
        await self.stream.aclose()
