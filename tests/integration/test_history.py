"""History on disk over real sockets: old pages from the store, dedup of cmids that left
memory, a restart that keeps everything."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from imcore.config import build
from imcore.server import RunningServer, serve
from tests.helpers.client import Client, open_client
from tests.helpers.core import SECRET

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

G = "g:big"
DM = "dm:alice:bob"
#: A hot tail this small keeps a few hundred events in memory: most pages need the store.
SMALL_TAIL = 100_000


def settings(data_dir: Path, **more: object) -> dict[str, object]:
    return {
        "port": 0,
        "admin_port": 0,
        "data_dir": data_dir,
        "auth_secret": SECRET,
        "hot_tail_bytes": SMALL_TAIL,
        "send_rate": 1e6,
        "send_burst": 1_000_000,
        **more,
    }


@asynccontextmanager
async def running(values: dict[str, object]) -> AsyncIterator[RunningServer]:
    """A server, stopped gracefully (commit, sync, snapshot) when the block ends."""
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, build(values))
        try:
            yield server
        finally:
            server.stop.set()


async def send_all(client: Client, conv: str, count: int, window: int = 200) -> list[Any]:
    """Send `count` messages (cmid m<i>, body {"n": i}), `window` in flight; the acks."""
    acks: list[Any] = []
    for start in range(0, count, window):
        ids = []
        for i in range(start, min(start + window, count)):
            ids.append(f"s{i}")
            await client.send_frame(op="send", id=f"s{i}", conv=conv, cmid=f"m{i}", body={"n": i})
        for frame_id in ids:
            while frame_id not in client._replies:
                await client._receive()
            acks.append(client._replies.pop(frame_id))
        client._pushes.clear()  # the echoes of our own sends
    return acks


async def sync_all(client: Client, conv: str, after: int = 0) -> list[Any]:
    """Every event of `conv` after `after`, page by page."""
    found: list[Any] = []
    while True:
        batch = await client.request(op="sync", conv=conv, after=after, limit=1000)
        assert batch["op"] == "batch", batch
        found += batch["msgs"]
        if not batch["more"]:
            return found
        after = batch["msgs"][-1]["seq"]


async def test_more_than_10000_messages_sync_back_from_seq_1_after_a_restart(
    tmp_path: Path,
) -> None:
    count = 10_050
    with trio.fail_after(90):
        async with (
            running(settings(tmp_path)) as server,
            open_client(server, "alice", recv=False) as alice,
        ):
            assert (await alice.request(op="group.create", conv=G, members=["bob"]))["op"] == "ok"
            acks = await send_all(alice, G, count)
            assert [a["seq"] for a in acks] == list(range(2, count + 2))
            # before the restart too, the old pages come from the store
            first = await alice.request(op="sync", conv=G, after=0, limit=5)
            assert [m["seq"] for m in first["msgs"]] == [1, 2, 3, 4, 5]
        async with (
            running(settings(tmp_path)) as server,
            open_client(server, "bob", recv=False) as bob,
        ):
            (summary,) = bob.welcome["convs"]
            assert (summary["head"], summary["floor"], summary["unread"]) == (
                count + 1,
                1,
                count,
            )
            msgs = await sync_all(bob, G)
            assert [m["seq"] for m in msgs] == list(range(1, count + 2))
            assert [m["body"] for m in msgs[1:]] == [{"n": i} for i in range(count)]
            assert [m["cmid"] for m in msgs[1:]] == [f"m{i}" for i in range(count)]
            # pages from the middle, both directions
            middle = await bob.request(op="sync", conv=G, before=5001, limit=100)
            assert [m["seq"] for m in middle["msgs"]] == list(range(4901, 5001))
            assert middle["more"] is True


async def test_a_retry_of_a_message_that_left_memory_is_still_a_dup(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with (
            running(settings(tmp_path)) as server,
            open_client(server, "alice", recv=False) as alice,
        ):
            await send_all(alice, DM, 2000)
            again = await alice.request(op="send", conv=DM, cmid="m0", body="retry")
            assert (again["op"], again["seq"], again.get("dup")) == ("ack", 1, True)
        async with (
            running(settings(tmp_path)) as server,
            open_client(server, "alice", recv=False) as alice,
        ):
            for i in (0, 1000, 1999):
                again = await alice.request(op="send", conv=DM, cmid=f"m{i}", body="retry")
                assert (again["seq"], again.get("dup")) == (i + 1, True)
            fresh = await alice.request(op="send", conv=DM, cmid="new", body="new")
            assert (fresh["seq"], fresh.get("dup", False)) == (2001, False)
            msgs = await sync_all(alice, DM)
            assert len(msgs) == 2001
            assert msgs[0]["body"] == {"n": 0}  # the retry stored nothing
