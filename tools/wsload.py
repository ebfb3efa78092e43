"""A minimal, fast WebSocket client for load generators (RFC 6455, client side only).

A load generator must not be slower than the server it measures. trio-websocket spends
tens of microseconds per message; this client parses server frames straight from the
socket buffer and masks its own frames with a zero key (a valid mask that leaves the
payload as is), so a generator process can keep up with many times more messages.
On a socket it reads and writes as the server does: a read waits for the socket first
(trio's `receive_some` tries it first, and a client waiting for its next message mostly
finds nothing), and a write goes straight to a socket with room.
Pings are answered; permessage-deflate is never offered.
"""

from __future__ import annotations

import base64
import os
import struct

import trio

from imcore.server.websocket import write_some

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One final, masked frame (mask key 0000)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


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
        await self._send_all(client_frame(payload, opcode))

    async def send_many(self, payloads: list[bytes], opcode: int = OP_BINARY) -> None:
        await self._send_all(b"".join(client_frame(p, opcode) for p in payloads))

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
        buf, pos = self._buf, 0
        out: list[bytes] = []
        replies: list[bytes] = []
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            opcode = b0 & 0x0F
            if opcode in (OP_TEXT, OP_BINARY):
                out.append(payload)  # the server never fragments
            elif opcode == OP_PING:
                self.pings += 1
                if self.answer_pings:
                    replies.append(client_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                self.closed_code = (
                    struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                )
        del buf[:pos]
        return out, b"".join(replies)

    async def aclose(self) -> None:
        await self.stream.aclose()
