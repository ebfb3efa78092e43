"""Retention on trio's MockClock: by count and by age, floors move and the store deletes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from imcore.config import build
from imcore.server import serve
from imcore.server.checkpoint import GATHER_S
from imcore.server.store import HistoryStore, store_path
from tests.helpers.client import Client, token
from tests.helpers.core import SECRET
from tests.helpers.files import InlineFiles
from tests.helpers.memory import MemoryListener, open_memory_client

if TYPE_CHECKING:
    from pathlib import Path

DM = "dm:alice:bob"
DAY_S = 86_400


async def start(nursery: trio.Nursery, tmp_path: Path, **settings: object) -> MemoryListener:
    listener = MemoryListener()
    values = {
        "data_dir": tmp_path,
        "auth_secret": SECRET,
        "admin_port": 0,
        "hot_tail_bytes": 2000,
        "retention_interval_s": 600.0,
        **settings,
    }

    async def run(task_status: trio.TaskStatus[object]) -> None:
        await serve(
            build(values), listeners=[listener], files=InlineFiles(), task_status=task_status
        )

    await nursery.start(run)
    return listener


async def said_hello(client: Client, user: str) -> Client:
    client.welcome = await client.request(
        op="hello", v=1, token=token(user, ttl_s=30 * DAY_S), device="d", recv=False
    )
    assert client.welcome["op"] == "welcome", client.welcome
    return client


async def send(client: Client, count: int, prefix: str) -> None:
    for i in range(count):
        ack = await client.request(op="send", conv=DM, cmid=f"{prefix}{i}", body=f"{prefix}{i}")
        assert ack["op"] == "ack", ack


async def page(client: Client) -> Any:
    return await client.request(op="sync", conv=DM, after=0, limit=1000)


def stored_seqs(data_dir: Path) -> list[int]:
    store = HistoryStore(store_path(data_dir))
    try:
        return [e.seq for e in store.scan(DM)]
    finally:
        store.close()


async def test_retain_messages_keeps_the_newest_and_deletes_the_rest(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await start(nursery, tmp_path, retain_messages=10)
    async with open_memory_client(listener) as raw:
        alice = await said_hello(raw, "alice")
        await send(alice, 30, "m")
        before = await page(alice)
        assert (before["floor"], len(before["msgs"])) == (1, 30)  # not swept yet
        await trio.sleep(600 + GATHER_S + 1)  # a sweep, then the checkpoint's write
        after = await page(alice)
        assert (after["floor"], [m["seq"] for m in after["msgs"]]) == (21, list(range(21, 31)))
        assert stored_seqs(tmp_path) == list(range(21, 31))
        convs = await alice.request(op="convs")
        assert convs["convs"][0]["floor"] == 21
    async with open_memory_client(listener) as raw:
        bob = await said_hello(raw, "bob")
        (summary,) = bob.welcome["convs"]
        assert (summary["floor"], summary["unread"]) == (21, 10)


async def test_retain_days_deletes_what_is_older(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Days pass by jumps of the clock (each timer then fires once, late), not by sleeping
    # through every timer of the server; heartbeats far apart keep the client connected.
    listener = await start(nursery, tmp_path, retain_days=1, heartbeat_ms=10 * DAY_S * 1000)

    async def days_pass(seconds: float) -> None:
        autojump_clock.jump(seconds)
        await trio.sleep(600 + GATHER_S + 1)  # a retention sweep, and the checkpoint after it

    async with open_memory_client(listener) as raw:
        alice = await said_hello(raw, "alice")
        await send(alice, 5, "old")
        await days_pass(DAY_S - 3600)
        await send(alice, 3, "new")
        assert (await page(alice))["floor"] == 1  # a day has not passed for any of them
        await days_pass(3600)  # the old ones are a day old; the new ones are not
        after = await page(alice)
        assert (after["floor"], [m["body"] for m in after["msgs"]]) == (6, ["new0", "new1", "new2"])
        assert stored_seqs(tmp_path) == [6, 7, 8]
        await days_pass(DAY_S)
        gone = await page(alice)
        assert (gone["floor"], gone["head"], gone["msgs"]) == (9, 8, [])
        assert stored_seqs(tmp_path) == []
        again = await alice.request(op="send", conv=DM, cmid="old0", body="old0")
        assert (again["seq"], again["dup"]) == (9, False)  # retained away: a new message
