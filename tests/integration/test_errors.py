"""Every error code of spec §1-8 over the wire: a clear answer, and nothing else changes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio_websocket

from imcore.core.chat import Chat
from tests.helpers.client import Client, open_client, open_ws, token

if TYPE_CHECKING:
    from imcore.server import RunningServer

DM = "dm:alice:bob"


async def still_fine(client: Client) -> None:
    assert (await client.request(op="ping"))["op"] == "pong"


async def test_every_request_error_is_answered_and_changes_nothing(
    server: RunningServer, settings: dict[str, object]
) -> None:
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice, open_client(server, "bob") as bob:
            await alice.request(op="send", conv=DM, cmid="before", body="hi")
            await alice.request(op="group.create", conv="g:team", members=["bob"])
            cases: list[tuple[dict[str, Any], str]] = [
                ({"op": "teleport"}, "unknown_op"),
                ({"op": "send", "conv": "dm:bob:alice", "cmid": "c", "body": 1}, "invalid"),
                ({"op": "send", "conv": DM, "cmid": "c"}, "invalid"),
                ({"op": "sync", "conv": DM, "limit": 0}, "invalid"),
                ({"op": "read", "conv": DM, "seq": 99}, "invalid"),
                ({"op": "hello", "v": 1, "token": token("alice"), "device": "d"}, "invalid"),
                ({"op": "send", "conv": "dm:bob:carol", "cmid": "c", "body": 1}, "forbidden"),
                ({"op": "sync", "conv": "dm:bob:carol"}, "forbidden"),
                ({"op": "send", "conv": "g:nowhere", "cmid": "c", "body": 1}, "not_found"),
                ({"op": "group.info", "conv": "g:nowhere"}, "not_found"),
                ({"op": "group.create", "conv": "g:team"}, "conflict"),
                ({"op": "group.add", "conv": "g:team", "users": ["bob"]}, "conflict"),
                ({"op": "send", "conv": DM, "cmid": "c", "body": "x" * 70_000}, "too_large"),
            ]
            for frame, code in cases:
                reply = await alice.request(**frame)
                assert (reply["op"], reply["code"]) == ("error", code), frame
                assert isinstance(reply["message"], str)
                assert reply["message"]
            forbidden = await bob.request(op="group.add", conv="g:team", users=["x"])
            assert forbidden["code"] == "forbidden"
            await still_fine(alice)
            # the stored state is as before
            batch = await bob.request(op="sync", conv=DM, after=0)
            assert [m["cmid"] for m in batch["msgs"]] == ["before"]
            info = await bob.request(op="group.info", conv="g:team")
            assert (info["head"], len(info["members"])) == (1, 2)


async def test_undecodable_frame_is_bad_frame_without_an_id(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice:
            await alice.ws.send_message("{not json")
            error = await alice.next_push("error")
            assert error["code"] == "bad_frame"
            await alice.ws.send_message(json.dumps([1, 2]))
            assert (await alice.next_push("error"))["code"] == "bad_frame"
            await still_fine(alice)


async def test_before_hello_everything_is_unauthorized(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_ws(server) as ws:
            client = Client(ws, "imcore.v1.json")
            reply = await client.request(op="send", conv=DM, cmid="c", body=1)
            assert reply["code"] == "unauthorized"
            welcome = await client.request(op="hello", v=1, token=token("alice"), device="d")
            assert welcome["op"] == "welcome"


async def test_bad_token_is_unauthorized_then_closed_4001(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_ws(server) as ws:
            client = Client(ws, "imcore.v1.json")
            reply = await client.request(op="hello", v=1, token=token("alice", -10), device="d")
            assert reply["code"] == "unauthorized"
            assert await client.closed_with() == 4001


@pytest.fixture
def tight(settings: dict[str, object]) -> dict[str, object]:
    settings.update(max_devices=1, max_group_members=2, send_burst=2, send_rate=0.5)
    return settings


async def test_limits_answer_limit_and_rate_limited(tight: object, server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice, open_client(server, "bob") as bob:
            reply = await alice.request(op="group.create", conv="g:x", members=["bob", "carol"])
            assert reply["code"] == "limit"
            for i in range(2):
                assert (await alice.request(op="send", conv=DM, cmid=f"{i}", body=i))["seq"] > 0
            limited = await alice.request(op="send", conv=DM, cmid="2", body=2)
            assert limited["code"] == "rate_limited"
            assert 0 < limited["retry_ms"] <= 2000
            # a second device is over max_devices: limit, then close 4029
            async with open_ws(server) as ws:
                extra = Client(ws, "imcore.v1.json")
                reply = await extra.request(op="hello", v=1, token=token("bob"), device="other")
                assert reply["code"] == "limit"
                assert await extra.closed_with() == 4029
            await still_fine(bob)


async def test_same_device_replaces_the_older_connection_4003(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with (
            open_client(server, "alice", device="phone") as old,
            open_client(server, "alice", device="phone") as new,
        ):
            assert await old.closed_with() == 4003
            await still_fine(new)


async def test_frame_over_max_frame_closes_1009(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice, open_client(server, "bob") as bob:
            await alice.ws.send_message("x" * 300_000)
            assert await alice.closed_with() == 1009
            await still_fine(bob)


async def test_unexpected_failure_is_internal_and_the_connection_lives(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Chat, "sync", broken)
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice:
            await alice.send_frame(op="sync", conv=DM)
            assert (await alice.next_push("error"))["code"] == "internal"
            await still_fine(alice)


async def test_other_paths_get_404(server: RunningServer) -> None:
    with trio.fail_after(10):
        rejected = pytest.RaisesExc(
            trio_websocket.ConnectionRejected, check=lambda e: e.status_code == 404
        )
        with pytest.RaisesGroup(rejected, flatten_subgroups=True):
            async with open_ws(server, path="/chat"):
                pass  # pragma: no cover
