"""An in-memory listener, so the server can run on trio's MockClock without real sockets."""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
import trio.testing
import trio_websocket

from imcore.wsclient import RawWebSocket

from .client import Client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client


async def open_raw_client(
    listener: MemoryListener, encoding: str = "imcore.v1.json"
) -> RawWebSocket:
    """A bare WebSocket client over an in-memory stream: it answers pings only if told to."""
    return await RawWebSocket.handshake(await listener.connect(), "localhost", "/ws", encoding)


@asynccontextmanager
async def open_memory_client(
    listener: MemoryListener, encoding: str = "imcore.v1.json"
) -> AsyncIterator[Client]:
    """A WebSocket client over an in-memory stream; it has not said hello."""
    async with trio.open_nursery() as nursery:
        stream = await listener.connect()
        # trio_websocket annotates the stream as a socket or SSL stream, but it works on any
        # trio Stream (it only looks for a socket to name the endpoints).
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]
            "localhost",
            "/ws",
            subprotocols=[encoding],
        )
        try:
            yield Client(ws, encoding)
        finally:
            await ws.aclose()
            await stream.aclose()
            nursery.cancel_scope.cancel()
