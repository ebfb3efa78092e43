from __future__ import annotations

import json
from typing import TYPE_CHECKING

import cbor2
import pytest
import trio

from tests.helpers.client import Client, open_client, open_ws, token

if TYPE_CHECKING:
    from imcore.server import RunningServer

DM = "dm:alice:bob"


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["imcore.v1.cbor"], "imcore.v1.cbor"),
        (["imcore.v1.json"], "imcore.v1.json"),
        (["chat", "imcore.v1.json", "imcore.v1.cbor"], "imcore.v1.json"),
        (None, None),
        (["something.else"], None),
    ],
)
async def test_subprotocol_negotiation(
    server: RunningServer, offered: list[str] | None, chosen: str | None
) -> None:
    with trio.fail_after(10):
        async with open_ws(server, None) as ws:
            pass
        encoding = offered[0] if offered and len(offered) == 1 else None
        async with open_ws(server, encoding) as ws:
            if len(offered or []) <= 1:
                assert ws.subprotocol == chosen
            hello = {"op": "hello", "id": 1, "v": 1, "token": token("alice"), "device": "d"}
            if ws.subprotocol == "imcore.v1.cbor":
                await ws.send_message(cbor2.dumps(hello))
                reply = await ws.get_message()
                assert isinstance(reply, bytes)
                assert cbor2.loads(reply)["op"] == "welcome"
            else:
                # no subprotocol, or JSON: text frames of JSON (spec §1)
                await ws.send_message(json.dumps(hello))
                reply = await ws.get_message()
                assert isinstance(reply, str)
                assert json.loads(reply)["op"] == "welcome"


async def test_cbor_and_json_clients_talk_to_each_other(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with (
            open_client(server, "alice", encoding="imcore.v1.cbor") as alice,
            open_client(server, "bob", encoding="imcore.v1.json") as bob,
        ):
            body = {"text": "héllo", "n": [1, 2.5, None, True]}
            ack = await alice.request(op="send", conv=DM, cmid="c", body=body)
            assert ack["seq"] == 1
            for client in (alice, bob):
                assert (await client.next_push("msg"))["body"] == body


async def test_several_subprotocols_pick_the_first_we_speak(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_ws(server, "imcore.v1.cbor") as ws:
            client = Client(ws, "imcore.v1.cbor")
            welcome = await client.request(op="hello", v=1, token=token("x"), device="d")
            assert welcome["op"] == "welcome"
