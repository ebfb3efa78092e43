"""The WebSocket layer over real sockets: handshake refusals, fragments, control frames and
the closing handshake, as RFC 6455 has them."""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING

import trio

from imcore import wsframes
from imcore.wsclient import RawWebSocket
from imcore.wsframes import OP_CLOSE, OP_CONT, OP_PING, OP_TEXT
from tests.helpers.client import token

if TYPE_CHECKING:
    from imcore.server import RunningServer


async def connect(server: RunningServer) -> RawWebSocket:
    return await RawWebSocket.connect(server.host, server.port, "/ws", "imcore.v1.json")


async def hello(ws: RawWebSocket, user: str = "alice") -> None:
    frame = {"op": "hello", "id": 1, "v": 1, "token": token(user), "device": "d"}
    await ws.send(json.dumps(frame).encode(), OP_TEXT)
    (reply,) = await ws.receive()
    assert json.loads(reply)["op"] == "welcome"


def fragment(data: bytes, first_opcode: int, fin: bool) -> bytes:
    """A client frame (masked) that may be a fragment."""
    return wsframes.frame(data, first_opcode, masked=True, fin=fin)


async def test_a_malformed_handshake_gets_400_and_the_server_carries_on(
    server: RunningServer,
) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(server.host, server.port)
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")  # no Upgrade
        reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 400")
        await stream.aclose()
        ws = await connect(server)
        await hello(ws)
        await ws.aclose()


async def test_a_fragmented_message_is_taken_whole(server: RunningServer) -> None:
    with trio.fail_after(10):
        ws = await connect(server)
        await hello(ws)
        data = json.dumps({"op": "ping", "id": 7}).encode()
        parts = [data[:5], data[5:12], data[12:]]
        await ws.stream.send_all(
            fragment(parts[0], OP_TEXT, fin=False)
            + fragment(parts[1], OP_CONT, fin=False)
            + fragment(parts[2], OP_CONT, fin=True)
        )
        (reply,) = await ws.receive()
        assert json.loads(reply) == {"op": "pong", "id": 7, "ts": 0}
        await ws.aclose()


async def test_a_ping_is_answered_with_its_payload(server: RunningServer) -> None:
    with trio.fail_after(10):
        ws = await connect(server)
        await ws.stream.send_all(wsframes.frame(b"are you there", OP_PING, masked=True))
        await hello(ws)  # the pong is read (and dropped) by the client on the way
        await ws.stream.send_all(wsframes.frame(b"again", OP_PING, masked=True))
        raw = await ws.stream.receive_some(4096)
        assert raw == b"\x8a\x05again"  # final pong, unmasked, same payload
        await ws.aclose()


async def test_the_clients_close_is_answered_with_its_code_then_the_server_hangs_up(
    server: RunningServer,
) -> None:
    with trio.fail_after(10):
        ws = await connect(server)
        await hello(ws)
        await ws.stream.send_all(
            wsframes.frame(struct.pack("!H", 4321) + b"bye", OP_CLOSE, masked=True)
        )
        received = b""
        while chunk := await ws.stream.receive_some(4096):
            received += chunk
        assert received[0] == 0x88  # a final close frame, unmasked ...
        assert received[2:4] == struct.pack("!H", 4321)  # ... with the client's code
        await ws.aclose()


async def test_a_client_that_vanishes_mid_frame_is_dropped(server: RunningServer) -> None:
    with trio.fail_after(10):
        ws = await connect(server)
        await hello(ws)
        await ws.stream.send_all(wsframes.frame(b"x" * 200, OP_TEXT, masked=True)[:50])
        await ws.aclose()
        other = await connect(server)
        await hello(other, "bob")
        await other.aclose()


async def test_frames_sent_faster_than_one_read_takes_are_all_answered_in_order(
    server: RunningServer,
) -> None:
    # 6,000 frames in one write: well over one read's buffer, so the server reads on
    # without waiting for the socket in between.
    with trio.fail_after(20):
        ws = await connect(server)
        await hello(ws)
        frames = [json.dumps({"op": "ping", "id": i}).encode() for i in range(6000)]
        assert sum(map(len, frames)) > 2 * 65_536
        await ws.send_many(frames, OP_TEXT)
        ids: list[int] = []
        while len(ids) < len(frames):
            ids += [json.loads(reply)["id"] for reply in await ws.receive()]
        assert ids == list(range(6000))
        await ws.aclose()
