"""Server-side WebSockets on trio streams, with wsproto as the protocol engine.

wsproto (the engine trio-websocket is built on) does the opening handshake and parses the
client's frames; this module only moves bytes. It owns no task: the connection's reader
calls `receive`, and its writer puts on the wire the pre-framed pushes and the control
frames made here, in one order. Without trio-websocket's own reader task, message channel
and send lock, each connection costs one task hop less per frame read and about half the
memory, and pre-framed bytes are written without reaching into another library's
internals (see docs/architecture.md).

A server frame is not masked (RFC 6455 §5.1), so `preframe` (`wsframes.frame`) builds
header + payload once per pushed event and encoding, and the same bytes go to every
recipient.

Nearly every client frame is a whole, final, masked text or binary message of under 64 KiB.
Those are unmasked here (`Reader`), at a tenth of what wsproto's general parser costs; any
other frame (control, fragment, 64-bit length, reserved bits, bad UTF-8, over the size
limit) goes to wsproto, which stays the judge of everything unusual.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import trio
from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
)
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..core import CloseCode
from ..wsclient import write_some
from ..wsframes import OP_BINARY, OP_TEXT, frame

if TYPE_CHECKING:
    from collections.abc import Callable

#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65_536


def preframe(payload: bytes | str) -> bytes:
    """One final, unmasked WebSocket message: text for `str` (JSON), binary for `bytes`."""
    if isinstance(payload, str):
        return frame(payload.encode(), OP_TEXT)
    return frame(payload, OP_BINARY)


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What a client asked for in its opening handshake."""

    path: str
    subprotocols: list[str]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the handshake with this HTTP status and a plain-text body."""

    status: int
    body: bytes


async def accept(
    stream: trio.abc.Stream,
    choose: Callable[[Upgrade], str | Refuse | None],
    max_message: int,
) -> WebSocket | None:
    """Do the opening handshake on `stream`.

    Args:
        stream: a freshly accepted stream.
        choose: decides from the request: a subprotocol (or None for none), or a refusal.
        max_message: bytes a client message may have; larger ones close with 1009.

    Returns:
        The open WebSocket, or None if the handshake was refused, malformed or cut off
        (the caller closes the stream).
    """
    handshake = H11Handshake(ConnectionType.SERVER)
    while True:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except trio.BrokenResourceError:
            return None
        try:
            handshake.receive_data(cast("bytes", data) or None)
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            if isinstance(hint, RejectConnection):
                await _send_quietly(stream, handshake.send(hint))
            return None
        for event in handshake.events():
            if not isinstance(event, Request):
                continue
            decision = choose(Upgrade(event.target, list(event.subprotocols)))
            if isinstance(decision, Refuse):
                headers = [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(decision.body)).encode()),
                ]
                head = handshake.send(
                    RejectConnection(status_code=decision.status, headers=headers, has_body=True)
                )
                body = handshake.send(RejectData(data=decision.body))
                await _send_quietly(stream, head + body)
                return None
            reply = handshake.send(AcceptConnection(subprotocol=decision))
            if not await _send_quietly(stream, reply):
                return None
            protocol = handshake.connection
            assert protocol is not None  # set by AcceptConnection
            return WebSocket(stream, protocol, decision, max_message)
        if not data:
            return None


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> bool:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class ClientClose:
    """The client began the closing handshake with `code`: answer it and hang up."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolClose:
    """The client's bytes broke the protocol (1002, 1007) or a message was over the limit
    (1009): the server closes with `code`."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Gone:
    """Nothing more comes: the client answered our close, or the connection is lost."""


Received = str | bytes | Ping | Pong | CloseConnection
Event = str | bytes | Ping | Pong | ClientClose | ProtocolClose | Gone

#: First header byte of a final text or binary frame with no reserved bits.
_FIN_TEXT, _FIN_BINARY = 0x80 | OP_TEXT, 0x80 | OP_BINARY


class Reader:
    """Client bytes in, whole messages and control frames out, with wsproto.

    wsproto is always handed the stream from a frame boundary on: the frames taken here
    are cut out at frame boundaries, and once a frame goes to wsproto, every byte follows
    it there until a boundary with no fragmented message open (`_track` follows them). So
    wsproto never misses part of a frame, and its state (a message in fragments, the
    closing handshake) is exactly what its own frames make it.

    Args:
        protocol: wsproto's connection, after the handshake.
        max_message: bytes a client message may have.
    """

    __slots__ = (
        "_closing",
        "_fragmented",
        "_head",
        "_held",
        "_parts",
        "_size",
        "_skip",
        "max_message",
        "protocol",
    )

    def __init__(self, protocol: Protocol, max_message: int) -> None:
        self.protocol = protocol
        self.max_message = max_message
        self._held = b""  # the start of a frame to take here, until the rest comes
        self._skip = 0  # payload bytes wsproto still reads of its current frame
        self._head = b""  # the part of a frame header read so far, while wsproto reads
        self._fragmented = False  # a message in fragments is open (wsproto's)
        self._closing = False  # a close came out: every later byte is wsproto's
        self._parts: list[str | bytes] = []  # a fragmented message so far
        self._size = 0

    @property
    def _with_wsproto(self) -> bool:
        """Whether wsproto is in the middle of something, so that bytes go on to it."""
        return bool(self._skip or self._head or self._fragmented or self._closing)

    def feed(self, data: bytes) -> list[Received]:
        """Bytes read (b"" at the end of the stream); whatever they complete, in order."""
        if not data:
            self._held = b""
            return self._to_wsproto(None)
        if self._held:
            data = self._held + data
            self._held = b""
        if self._with_wsproto or self.protocol.state is not ConnectionState.OPEN:
            return self._to_wsproto(data)
        received: list[Received] = []
        pos, end, limit = 0, len(data), self.max_message
        while pos < end:
            if end - pos < 2:
                self._held = data[pos:]
                break
            b0, b1 = data[pos], data[pos + 1]
            # Ours: final text or binary, no reserved bits, masked, a 7- or 16-bit length.
            if (b0 != _FIN_BINARY and b0 != _FIN_TEXT) or b1 < 0x80 or b1 == 0xFF:
                received += self._to_wsproto(data[pos:])
                break
            n = b1 & 0x7F
            start = pos + 6
            if n == 126:
                if end - pos < 4:
                    self._held = data[pos:]
                    break
                n = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 8
                if n < 126:  # not the shortest length: wsproto closes with 1002
                    received += self._to_wsproto(data[pos:])
                    break
            if n > limit:
                received += self._to_wsproto(data[pos:])  # 1009, as wsproto's messages get
                break
            stop = start + n
            if stop > end:
                self._held = data[pos:]
                break
            payload = data[start:stop]
            if n:
                mask = data[start - 4 : start]
                if mask != b"\0\0\0\0":
                    key = int.from_bytes((mask * ((n + 3) >> 2))[:n], "big")
                    payload = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
            if b0 == _FIN_TEXT:
                try:
                    received.append(payload.decode())
                except UnicodeDecodeError:
                    received += self._to_wsproto(data[pos:])  # wsproto closes with 1007
                    break
            else:
                received.append(payload)
            pos = stop
        return received

    def _to_wsproto(self, data: bytes | None) -> list[Received]:
        if data is not None:
            self._track(data)
        self.protocol.receive_data(data)
        received: list[Received] = []
        for event in self.protocol.events():
            if isinstance(event, (Ping, Pong, CloseConnection)):
                received.append(event)
                # After a close (the client's, or wsproto's own 1002/1007, after which it
                # parses nothing more) no byte is taken here again.
                self._closing = self._closing or isinstance(event, CloseConnection)
                continue
            if not isinstance(event, Message) or self._closing:
                continue  # once closing, messages are not handled
            data = event.data
            self._size += len(data.encode()) if isinstance(data, str) else len(data)
            if self._size > self.max_message:
                received.append(CloseConnection(CloseCode.TOO_BIG, "message too big"))
                self._closing = True
                self._parts, self._size = [], 0
                continue  # control frames after it still count: the client's close
            if event.message_finished and not self._parts:
                received.append(data)
            else:
                self._parts.append(data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    joined = "".join(parts) if isinstance(data, str) else b"".join(parts)  # type: ignore[arg-type]
                    received.append(joined)
            if event.message_finished:
                self._size = 0
        return received

    def _track(self, data: bytes) -> None:
        """Follow the frame boundaries in `data`, which goes to wsproto."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                taken = min(self._skip, end - pos)
                self._skip -= taken
                pos += taken
                continue
            head = self._head + data[pos : pos + 14]
            size = 2
            if len(head) >= 2:
                n = head[1] & 0x7F
                size += (2 if n == 126 else 8 if n == 127 else 0) + (4 if head[1] & 0x80 else 0)
            if len(head) < size:
                self._head = head
                return
            if n == 126:
                n = int.from_bytes(head[2:4], "big")
            elif n == 127:
                n = int.from_bytes(head[2:10], "big")
            pos += size - len(self._head)
            self._head = b""
            self._skip = n
            if head[0] & 0x0F < 0x8:  # a data frame or a continuation: not a control frame
                self._fragmented = not head[0] & 0x80


class WebSocket:
    """An open server WebSocket: whole client messages in, frames for the writer out.

    Args:
        stream: the transport.
        protocol: wsproto's frame protocol, after the handshake.
        subprotocol: the one agreed on, if any.
        max_message: bytes a client message may have.
    """

    __slots__ = (
        "_fd",
        "_full",
        "protocol",
        "reader",
        "stream",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: Protocol,
        subprotocol: str | None,
        max_message: int,
    ) -> None:
        self.stream = stream
        self.protocol = protocol
        self.subprotocol = subprotocol
        self.reader = Reader(protocol, max_message)
        # A socket is written straight away when it has room (see `send`).
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._full = False  # the last read filled the buffer: more is probably waiting

    @property
    def closed(self) -> bool:
        """The closing handshake is over (both close frames have passed), or the connection
        broke."""
        return self.protocol.state is ConnectionState.CLOSED

    async def receive(self) -> list[Event]:
        """Read once; whatever that completed, in order: messages (str for text, bytes for
        binary), pings and pongs, and where the closing handshake stands (`ClientClose`,
        `ProtocolClose`, `Gone`)."""
        if self.protocol.state is ConnectionState.CLOSED:
            return [Gone()]
        try:
            data = await (self._read() if self._fd >= 0 else self.stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        return [
            self._closing(r) if isinstance(r, CloseConnection) else r
            for r in self.reader.feed(bytes(data))
        ]

    def _closing(self, close: CloseConnection) -> ClientClose | ProtocolClose | Gone:
        """What a close from the reader means, by the state wsproto is in after it."""
        state = self.protocol.state
        if close.code == CloseReason.ABNORMAL_CLOSURE or state is ConnectionState.CLOSED:
            return Gone()  # lost, or the answer to our close
        if state is ConnectionState.REMOTE_CLOSING:
            return ClientClose(close.code, close.reason or "")
        return ProtocolClose(close.code, close.reason or "")  # wsproto's or the size limit

    async def _read(self) -> bytes:
        """One read from the socket.

        trio's `receive_some` tries the socket first, and after a read that succeeds it
        still passes through the scheduler once. A client that waits for its ack has
        nothing more to read after each message, so that first try is a wasted system call
        and exception. Here the read waits for the socket first, unless the last read
        filled the buffer; either way it passes through the scheduler once.
        """
        if self._full:
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.wait_readable(self._fd)
        while True:
            try:
                data = os.read(self._fd, RECEIVE_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                continue
            except OSError:
                return b""  # reset or otherwise lost: read as the end
            self._full = len(data) == RECEIVE_SIZE
            return data

    def pong(self, ping: Ping) -> bytes:
        return self._control(ping.response())

    def ping(self) -> bytes:
        return self._control(Ping())

    def close_frame(self, code: int, reason: str) -> bytes:
        """Our close frame, or the reply to the client's (wsproto knows which)."""
        return self._control(CloseConnection(code, reason))

    def _control(self, event: Ping | Pong | CloseConnection) -> bytes:
        # After a close frame has gone either way, no control frame but the reply may follow.
        try:
            return self.protocol.send(event)
        except LocalProtocolError:  # not in this state
            return b""

    @property
    def writes_now(self) -> bool:
        """Whether `write_now` can write at all: only a socket can."""
        return self._fd >= 0

    def write_now(self, data: bytes) -> int:
        """Write what the socket takes without waiting; how many bytes that was. Errors
        read as 0: the writer's next `send` meets them and ends the connection."""
        try:
            return os.write(self._fd, data)
        except OSError:
            return 0

    async def send(self, data: bytes) -> None:
        """Write whole frames. Only the connection's writer calls this.

        A socket with room takes the bytes in one system call, without a trip through the
        scheduler; only what it cannot take now waits in trio's `send_all`.

        Raises:
            trio.BrokenResourceError: the connection is lost.
        """
        if self._fd >= 0:
            sent = write_some(self._fd, data)
            if sent == len(data):
                return
            data = data[sent:]
        await self.stream.send_all(data)
