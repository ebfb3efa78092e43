"""A test client over trio-websocket: sends frames, routes replies by id, queues pushes."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import cbor2
import trio
import trio_websocket

from imcore.core import auth

from .core import SECRET

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from imcore.server import RunningServer

Frame = dict[str, Any]


class Client:
    """One connection as a test sees it.

    `request()` sends a frame with a fresh id and returns the reply with that id, whatever
    its op; frames without an id are pushes, kept in arrival order for `next_push()`.
    """

    def __init__(self, ws: trio_websocket.WebSocketConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.welcome: Frame = {}
        self._ids = itertools.count(1)
        self._replies: dict[object, Frame] = {}
        self._pushes: deque[Frame] = deque()

    async def send_frame(self, **frame: Any) -> None:
        if self.encoding == "imcore.v1.cbor":
            await self.ws.send_message(cbor2.dumps(frame))
        else:
            await self.ws.send_message(json.dumps(frame))

    def decode(self, data: bytes | str) -> Frame:
        if self.encoding == "imcore.v1.cbor":
            assert isinstance(data, bytes), "CBOR frames must be binary messages"
            frame: Frame = cbor2.loads(data)
        else:
            assert isinstance(data, str), "JSON frames must be text messages"
            frame = json.loads(data)
        return frame

    async def _receive(self) -> None:
        frame = self.decode(await self.ws.get_message())
        if "id" in frame:
            self._replies[frame["id"]] = frame
        else:
            self._pushes.append(frame)

    async def request(self, **frame: Any) -> Frame:
        frame_id = frame.setdefault("id", next(self._ids))
        await self.send_frame(**frame)
        while frame_id not in self._replies:
            await self._receive()
        return self._replies.pop(frame_id)

    async def next_push(self, op: str | None = None) -> Frame:
        """The oldest queued push (of `op`, if given), waiting for one if needed."""
        while True:
            for i, frame in enumerate(self._pushes):
                if op is None or frame["op"] == op:
                    del self._pushes[i]
                    return frame
            await self._receive()

    async def next_msgs(self, count: int, conv: str | None = None) -> list[Frame]:
        msgs: list[Frame] = []
        while len(msgs) < count:
            msg = await self.next_push("msg")
            if conv is None or msg["conv"] == conv:
                msgs.append(msg)
        return msgs

    def pending_pushes(self) -> list[Frame]:
        return list(self._pushes)

    async def closed_with(self) -> int | None:
        """Read until the server closes; return the close code."""
        try:
            while True:
                await self._receive()
        except trio_websocket.ConnectionClosed as closed:
            return None if closed.reason is None else closed.reason.code


def token(user: str, ttl_s: int = 3600) -> str:
    return auth.mint(user, SECRET, now_ms=int(time.time() * 1000), ttl_s=ttl_s)


async def _connect(port: int, rcvbuf: int | None) -> trio.SocketStream:
    if rcvbuf is None:
        return await trio.open_tcp_stream("127.0.0.1", port)
    # The receive buffer must be set before connecting: the window is agreed then.
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


@asynccontextmanager
async def open_ws(
    server: RunningServer,
    encoding: str | None = "imcore.v1.json",
    path: str = "/ws",
    rcvbuf: int | None = None,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client WebSocket to the server (with a socket receive buffer of `rcvbuf` bytes).

    The TCP stream is ours to close: trio-websocket's client leaves its socket open when the
    server closes first, which would leak a socket per test. The client reads from the
    socket only while the test takes its messages (trio-websocket queues one), so a test
    that stops taking them stops reading.

    So is trio-websocket's reader task ours to end. It may be parked handing a message to
    that queue of one when the test closes, and `aclose()` (trio-websocket 0.12.2) wakes it
    only if its close frame goes out: when the peer has reset the connection (a server
    killed with bytes unread), the send fails, the queue stays open, and the reader and
    this nursery would wait forever. Once the stream is closed the reader has nothing left
    to do, so it is cancelled.
    """
    async with trio.open_nursery() as nursery:
        stream = await _connect(server.port, rcvbuf)
        try:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                "127.0.0.1",
                path,
                subprotocols=[encoding] if encoding else None,
            )
            try:
                yield ws
            finally:
                await ws.aclose()
        finally:
            await stream.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_client(
    server: RunningServer,
    user: str,
    device: str = "d1",
    encoding: str = "imcore.v1.json",
    rcvbuf: int | None = None,
    **hello: Any,
) -> AsyncIterator[Client]:
    """A connected client that has said hello; `client.welcome` holds the reply."""
    async with open_ws(server, encoding, rcvbuf=rcvbuf) as ws:
        client = Client(ws, encoding)
        client.welcome = await client.request(
            op="hello", v=1, token=token(user), device=device, **hello
        )
        assert client.welcome["op"] == "welcome", client.welcome
        yield client
