"""Limits of spec §10 over the wire: each one answered as stated, and the rest carries on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from tests.helpers.client import open_client

if TYPE_CHECKING:
    from imcore.server import RunningServer


@pytest.fixture
def strict(settings: dict[str, object]) -> dict[str, object]:
    settings.update(abuse_errors=5, max_watch=3, receipt_fanout_max=2)
    return settings


async def test_too_many_bad_frames_close_4002(strict: object, server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "mallory") as mallory, open_client(server, "bob") as bob:
            for _ in range(5):
                assert (await mallory.request(op="nope"))["code"] == "unknown_op"
            await mallory.ws.send_message("garbage")
            assert await mallory.closed_with() == 4002
            assert (await bob.request(op="ping"))["op"] == "pong"


async def test_a_watch_list_is_bounded(strict: object, server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "carol") as carol:
            assert (await carol.request(op="watch", users=["a", "b"]))["op"] == "ok"
            refused = await carol.request(op="watch", users=["c", "d"])
            assert refused["code"] == "limit"
            assert (await carol.request(op="watch", users=["b", "c"]))["op"] == "ok"


async def test_typing_skips_groups_above_receipt_fanout_max(
    strict: object, server: RunningServer
) -> None:
    with trio.fail_after(10):
        async with open_client(server, "a") as a, open_client(server, "b") as b:
            await a.request(op="group.create", conv="g:small", members=["b"])
            await a.request(op="group.create", conv="g:big", members=["b", "c"])
            await a.request(op="typing", conv="g:big")
            await a.request(op="typing", conv="g:small")
            notice = await b.next_push("typing")
            assert notice == {"op": "typing", "conv": "g:small", "user": "a"}
