"""The protocol is not tied to our client code: the `websockets` package (asyncio) speaks it."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import cbor2
import pytest
import trio
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers.client import token

if TYPE_CHECKING:
    from imcore.server import RunningServer

DM = "dm:alice:bob"


class Peer:
    def __init__(self, ws: ClientConnection, encoding: str) -> None:
        self.ws, self.encoding, self.pushes = ws, encoding, list[dict[str, Any]]()

    async def send(self, **frame: Any) -> None:
        if self.encoding == "imcore.v1.cbor":
            await self.ws.send(cbor2.dumps(frame))
        else:
            await self.ws.send(json.dumps(frame))

    async def receive(self) -> dict[str, Any]:
        data = await self.ws.recv()
        if self.encoding == "imcore.v1.cbor":
            assert isinstance(data, bytes)
            frame: dict[str, Any] = cbor2.loads(data)
        else:
            assert isinstance(data, str)
            frame = json.loads(data)
        return frame

    async def request(self, **frame: Any) -> dict[str, Any]:
        await self.send(**frame)
        while True:
            reply = await self.receive()
            if reply.get("id") == frame["id"]:
                return reply
            self.pushes.append(reply)

    async def push(self, op: str) -> dict[str, Any]:
        for i, frame in enumerate(self.pushes):
            if frame["op"] == op:
                return self.pushes.pop(i)
        while True:
            frame = await self.receive()
            if frame["op"] == op:
                return frame
            self.pushes.append(frame)


async def exchange(port: int, encoding: str) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    async with (
        connect(url, subprotocols=[encoding]) as a,  # type: ignore[list-item]
        connect(url, subprotocols=[encoding]) as b,  # type: ignore[list-item]
    ):
        assert a.subprotocol == encoding
        alice, bob = Peer(a, encoding), Peer(b, encoding)
        for peer, user in ((alice, "alice"), (bob, "bob")):
            welcome = await peer.request(op="hello", id=1, v=1, token=token(user), device="d")
            assert welcome["op"] == "welcome"
        ack = await alice.request(op="send", id=2, conv=DM, cmid="m1", body={"t": "hi"})
        assert (ack["op"], ack["seq"], ack["dup"]) == ("ack", 1, False)
        for peer in (alice, bob):
            msg = await peer.push("msg")
            assert (msg["seq"], msg["from"], msg["body"]) == (1, "alice", {"t": "hi"})
        dup = await alice.request(op="send", id=3, conv=DM, cmid="m1", body="again")
        assert (dup["seq"], dup["dup"]) == (1, True)
        created = await bob.request(op="group.create", id=4, conv="g:f", members=["alice"])
        assert (created["op"], created["seq"]) == ("ok", 1)
        sys = (await alice.push("msg"))["sys"]
        assert (sys["type"], sys["users"], sys["public"]) == ("create", ["bob", "alice"], False)
        batch = await alice.request(op="sync", id=5, conv=DM, after=0)
        assert [m["cmid"] for m in batch["msgs"]] == ["m1"]
        await bob.send(op="recv", conv=DM, seq=1)
        assert (await alice.push("delivered"))["seq"] == 1
        error = await bob.request(op="send", id=6, conv="dm:x:y", cmid="c", body=1)
        assert error["code"] == "forbidden"


@pytest.mark.parametrize("encoding", ["imcore.v1.json", "imcore.v1.cbor"])
async def test_a_websockets_client_passes_the_end_to_end_exchange(
    server: RunningServer, encoding: str
) -> None:
    with trio.fail_after(20):
        await trio.to_thread.run_sync(asyncio.run, exchange(server.port, encoding))
