from __future__ import annotations

import itertools
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
import trio
import trio_websocket

from tests.helpers.client import Client, open_client, open_ws

if TYPE_CHECKING:
    from imcore.server import RunningServer


STAMPS = itertools.count()


async def stamp(client: Client) -> int:
    """The server's clock now, as it reports it: the `at` of a note to self, read on the
    same clock as `last_seen`. Whatever the server did before it read this send happened
    at or before the stamp, whatever the client's own clock says."""
    me = client.welcome["user"]
    cmid = f"stamp-{next(STAMPS)}"
    await client.request(op="send", conv=f"dm:{me}:{me}", cmid=cmid, body="")
    while (msg := await client.next_push("msg"))["cmid"] != cmid:
        pass
    at: int = msg["at"]
    return at


async def test_a_watcher_sees_online_offline_online_with_last_seen(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "carol") as carol:
            await carol.send_frame(op="watch", users=["alice"])
            first = await carol.next_push("presence")
            assert first == {"op": "presence", "user": "alice", "online": False, "last_seen": None}
            async with AsyncExitStack() as phones:
                before = await stamp(carol)
                await phones.enter_async_context(open_client(server, "alice", device="phone"))
                online = await carol.next_push("presence")
                assert online["online"] is True
                assert before <= online["last_seen"] <= await stamp(carol)
                # a second device coming and going changes nothing: she stays online, so
                # the next push (pushes of one user keep their order) is the real offline
                async with open_client(server, "alice", device="laptop"):
                    pass
                left_at = await stamp(carol)
            offline = await carol.next_push("presence")
            assert offline["online"] is False
            assert left_at <= offline["last_seen"] <= await stamp(carol)
            async with open_client(server, "alice", device="laptop"):
                again = await carol.next_push("presence")
                assert again["online"] is True
                assert offline["last_seen"] <= again["last_seen"] <= await stamp(carol)
            assert (await carol.request(op="unwatch", users=["alice"]))["op"] == "ok"


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
