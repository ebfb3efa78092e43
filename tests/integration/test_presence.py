from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
import trio
import trio_websocket

from tests.helpers.client import open_client, open_ws

if TYPE_CHECKING:
    from imcore.server import RunningServer


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_watcher_sees_online_offline_online_with_last_seen(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "carol") as carol:
            await carol.send_frame(op="watch", users=["alice"])
            first = await carol.next_push("presence")
            assert first == {"op": "presence", "user": "alice", "online": False, "last_seen": None}
            async with AsyncExitStack() as phones:
                before = now_ms()
                await phones.enter_async_context(open_client(server, "alice", device="phone"))
                online = await carol.next_push("presence")
                assert online["online"] is True
                assert before <= online["last_seen"] <= now_ms()
                # a second device coming and going changes nothing: she stays online, so
                # the next push (pushes of one user keep their order) is the real offline
                async with open_client(server, "alice", device="laptop"):
                    pass
                left_at = now_ms()
            offline = await carol.next_push("presence")
            assert offline["online"] is False
            assert left_at <= offline["last_seen"] <= now_ms()
            async with open_client(server, "alice", device="laptop"):
                again = await carol.next_push("presence")
                assert again["online"] is True
                assert again["last_seen"] >= offline["last_seen"]
            assert await carol.request(op="unwatch", users=["alice"]) == {"op": "ok", "id": 2}


@pytest.fixture
def few(settings: dict[str, object]) -> dict[str, object]:
    settings["max_connections"] = 2
    return settings


async def test_connections_beyond_max_connections_get_503(
    few: object, server: RunningServer
) -> None:
    with trio.fail_after(10):
        async with open_client(server, "a"), open_client(server, "b"):
            refused = pytest.RaisesExc(
                trio_websocket.ConnectionRejected, check=lambda e: e.status_code == 503
            )
            with pytest.RaisesGroup(refused, flatten_subgroups=True):
                async with open_ws(server):
                    pass  # pragma: no cover
        async with open_client(server, "c") as c:  # room again once they left
            assert (await c.request(op="ping"))["op"] == "pong"
