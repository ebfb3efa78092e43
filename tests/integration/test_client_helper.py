"""The test client's own teardown: leaving `open_ws` never waits on a dead connection.

Every crash test kills a server under its clients; if leaving a client could hang, those tests
would hang instead of failing. The peer here is a bare wsproto server, so the test controls
exactly what is on the wire when the connection is reset.
"""

from __future__ import annotations

import socket
import struct

import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from imcore.server import RunningServer
from tests.helpers.client import open_ws

MESSAGES = 3


async def _accept_send_and_reset(
    listener: trio.socket.SocketType, reset_now: trio.Event, reset_done: trio.Event
) -> None:
    """Accept one WebSocket, send MESSAGES text messages in one write, then, when told,
    reset the connection (SO_LINGER 0: an RST, as from a process killed with bytes unread)."""
    sock, _ = await listener.accept()
    with sock:
        ws = WSConnection(ConnectionType.SERVER)
        while not any(isinstance(event, Request) for event in ws.events()):
            ws.receive_data(await sock.recv(65536))
        out = ws.send(AcceptConnection())
        for i in range(MESSAGES):
            out += ws.send(TextMessage(data=str(i)))
        await trio.SocketStream(sock).send_all(out)
        await reset_now.wait()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset_done.set()


async def test_leaving_open_ws_returns_when_the_peer_reset_with_messages_untaken() -> None:
    # trio-websocket's reader holds the messages the test did not take; the reset makes the
    # close frame's send fail, and the reader must not keep the helper's nursery open.
    reset_now, reset_done = trio.Event(), trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listener = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with listener:
                await listener.bind(("127.0.0.1", 0))
                listener.listen()
                port = listener.getsockname()[1]
                nursery.start_soon(_accept_send_and_reset, listener, reset_now, reset_done)
                async with open_ws(RunningServer("127.0.0.1", port), encoding=None) as ws:
                    assert await ws.get_message() == "0"
                    # the reader now holds "1" in the queue and waits to hand over "2"
                    await trio.testing.wait_all_tasks_blocked()
                    reset_now.set()
                    await reset_done.wait()
