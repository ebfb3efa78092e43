"""The admin port and `imcore-admin inspect` on history that lives on disk: /status and
/metrics show the store and the hot tails, the conversation views read old events from
the store."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from imcore.core.history import EVENT_OVERHEAD
from imcore.server.store import store_files, store_path
from tests.helpers.client import open_client

from .test_admin import call

if TYPE_CHECKING:
    from imcore.server import RunningServer
    from tests.helpers.client import Client

BIN = os.path.dirname(sys.executable)
DM = "dm:alice:bob"
#: A hot tail of about a dozen of these tests' events (EVENT_OVERHEAD + 3-byte bodies).
SMALL_TAIL = 12 * (EVENT_OVERHEAD + 3)


@pytest.fixture
def settings(settings: dict[str, object]) -> dict[str, object]:
    """The `server` fixture's settings, with a hot tail that holds few events."""
    return {**settings, "hot_tail_bytes": SMALL_TAIL}


def text(i: int) -> str:
    return f"b{i:02d}"


async def send(alice: Client, start: int, count: int) -> None:
    for i in range(start, start + count):
        ack = await alice.request(op="send", conv=DM, cmid=f"m{i}", body=text(i))
        assert ack["seq"] == i + 1, ack


async def stored(server: RunningServer) -> dict[str, Any]:
    """/status once the store holds every committed record (the checkpoint is off the ack
    path: ask until it has caught up)."""
    while True:
        _, status = await call(server, "GET", "/status")
        if status["checkpoint_lag"] == 0:
            return dict(status)


async def scrape(server: RunningServer) -> dict[str, float]:
    _, exposition = await call(server, "GET", "/metrics")
    return {
        s.name: s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if not s.labels
    }


def on_disk(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in store_files(data_dir))


def hold_store_writes(data_dir: Path) -> sqlite3.Connection:
    """Take the store's write lock from outside, as a stuck disk would hold the
    checkpoint (readers go on)."""
    db = sqlite3.connect(
        store_path(data_dir), isolation_level=None, timeout=10, check_same_thread=False
    )
    db.execute("BEGIN IMMEDIATE")
    return db


async def test_status_and_metrics_show_the_store_and_the_checkpoint_lag(
    server: RunningServer, settings: dict[str, object]
) -> None:
    data_dir = Path(str(settings["data_dir"]))
    with trio.fail_after(30):
        async with open_client(server, "alice", recv=False) as alice:
            await send(alice, 0, 10)
            status = await stored(server)
            assert (status["store_lsn"], status["wal_lsn"]) == (10, 10)
            assert status["store_bytes"] == on_disk(data_dir) > 0
            metrics = await scrape(server)
            assert metrics["imcore_store_bytes"] == on_disk(data_dir)
            assert (metrics["imcore_store_lsn"], metrics["imcore_checkpoint_lag"]) == (10, 0)

            held = await trio.to_thread.run_sync(hold_store_writes, data_dir)
            try:
                await send(alice, 10, 5)  # acked: the log has them, the store cannot yet
                _, status = await call(server, "GET", "/status")
                assert (status["wal_lsn"], status["store_lsn"]) == (15, 10)
                assert status["checkpoint_lag"] == 5
                metrics = await scrape(server)
                assert (metrics["imcore_store_lsn"], metrics["imcore_checkpoint_lag"]) == (10, 5)
            finally:
                await trio.to_thread.run_sync(held.execute, "ROLLBACK")
                held.close()
            status = await stored(server)
            assert (status["store_lsn"], status["checkpoint_lag"]) == (15, 0)


async def test_status_and_metrics_show_the_hot_tail_and_its_hit_rate(
    server: RunningServer, settings: dict[str, object]
) -> None:
    with trio.fail_after(30):
        async with open_client(server, "alice", recv=False) as alice:
            await send(alice, 0, 50)
            before = await stored(server)  # evicted down to the budget once stored
            assert 0 < before["hot_tail_events"] < 50
            assert before["hot_tail_bytes"] == before["hot_tail_events"] * (EVENT_OVERHEAD + 3)
            assert before["hot_tail_bytes"] <= SMALL_TAIL
            for _ in range(2):
                recent = await alice.request(op="sync", conv=DM, after=45)  # in memory
                assert [m["body"] for m in recent["msgs"]] == [text(i) for i in range(45, 50)]
            old = await alice.request(op="sync", conv=DM, after=0, limit=5)  # on disk only
            assert [m["body"] for m in old["msgs"]] == [text(i) for i in range(5)]
        _, status = await call(server, "GET", "/status")
        hits, misses = status["hot_tail_hits"], status["hot_tail_misses"]
        assert (hits, misses) == (before["hot_tail_hits"] + 2, before["hot_tail_misses"] + 1)
        assert status["hot_tail_hit_rate"] == round(hits / (hits + misses), 4)
        metrics = await scrape(server)
        assert metrics["imcore_hot_tail_hits_total"] == hits
        assert metrics["imcore_hot_tail_misses_total"] == misses
        assert metrics["imcore_hot_tail_events"] == status["hot_tail_events"]
        assert metrics["imcore_hot_tail_bytes"] == status["hot_tail_bytes"]
        table = await trio.run_process(
            [
                os.path.join(BIN, "imcore-admin"),
                "status",
                "--url",
                f"http://127.0.0.1:{server.admin_port}",
                "--data-dir",
                str(settings["data_dir"]),
                "--secret",
                str(settings["auth_secret"]),
            ],
            capture_stdout=True,
        )
        for key in ("store_bytes", "store_lsn", "checkpoint_lag", "hot_tail_hit_rate"):
            assert key.encode() in table.stdout


async def test_the_conversation_views_read_old_events_from_the_store(
    server: RunningServer, settings: dict[str, object]
) -> None:
    data_dir = str(settings["data_dir"])
    with trio.fail_after(60):
        async with open_client(server, "alice", recv=False) as alice:
            await send(alice, 0, 50)
            await stored(server)  # the log goes only where the store has it too
            assert (await call(server, "POST", "/snapshot"))[1]["lsn"] == 50
            await send(alice, 50, 10)
            await stored(server)
            assert (await call(server, "POST", "/snapshot"))[1]["lsn"] == 60  # log 1..50 goes
            await send(alice, 60, 5)
            status = await stored(server)
            assert status["hot_tail_events"] < 20  # the rest can only come from the store

            _, view = await call(server, "GET", f"/conversations/{DM}?last=20")
            assert [e["seq"] for e in view["last_events"]] == list(range(46, 66))
            assert [e["body"] for e in view["last_events"]] == [text(i) for i in range(45, 65)]
            assert (await call(server, "GET", f"/conversations/{DM}?last=0"))[1][
                "last_events"
            ] == []

            # Offline, beside the running server: events 46..50 are in the store alone.
            inspect = [os.path.join(BIN, "imcore-admin"), "inspect", "--data-dir", data_dir]
            shown = await trio.run_process(
                [*inspect, "--conv", DM, "--last", "20", "--json"], capture_stdout=True
            )
            offline = json.loads(shown.stdout)
            assert offline["last_events"] == view["last_events"]
