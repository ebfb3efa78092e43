"""Crashes while the checkpoint feeds the history store: kill -9 of a real server, and a
power loss that takes whatever SQLite had not made durable.

With a hot tail of a few hundred events, the checks read nearly every page back from the
store, and the retries of acked cmids are answered by store lookups; the checkpoint writes
after every commit under this load, so the crashes land in and between its transactions.
"""

from __future__ import annotations

import random
import sqlite3
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from imcore.config import build
from imcore.core import Limits
from imcore.server import RunningServer, serve
from imcore.server.datadir import verify
from imcore.server.layout import list_snapshots, snapshot_dir
from imcore.server.store import HistoryStore, store_path
from tests.helpers.core import SECRET
from tests.helpers.files import PowerLossFiles
from tests.helpers.process import ServerProcess, run_admin

from .workload import Ledger, check, retry, run_until_killed, set_up

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

SMALL_TAIL = "50000"
SEND_RATE = "1000000"  # see test_kill.py


async def test_kill_9_while_the_checkpoint_runs_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random("checkpoint-kill")
    ledger = Ledger()
    server = ServerProcess(
        tmp_path,
        "--hot-tail-bytes",
        SMALL_TAIL,
        "--snapshot-every",
        "700",
        "--send-rate",
        SEND_RATE,
    )
    with trio.fail_after(120):
        try:
            running = await server.start()
            await set_up(running)
            for round_no in range(3):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_until_killed, running, ledger, round_no)
                    await ledger.wait_acked(len(ledger.acked) + rng.randint(300, 1500))
                    server.kill()
                await server.exit()
                running = await server.start()
                await check(running, ledger)
                sample = rng.sample(sorted(ledger.acked), min(30, len(ledger.acked)))
                assert await retry(running, ledger, sample) == len(sample)
            server.terminate()
            await server.exit()
        finally:
            await server.aclose()
    store = HistoryStore(store_path(tmp_path))
    stored = sum(n for _, _, n in store.ranges().values())
    store.close()
    assert stored >= len(ledger.acked), "every acked event is in the store after a clean stop"
    verified = await run_admin("verify", "--data-dir", str(tmp_path))
    assert verified.returncode == 0, verified.stdout.decode()


async def test_a_power_loss_during_checkpoints_keeps_every_acked_event(tmp_path: Path) -> None:
    rng = random.Random("checkpoint-power")
    for crash in range(3):
        data_dir = tmp_path / f"run{crash}"
        config = build(
            {
                "port": 0,
                "data_dir": data_dir,
                "auth_secret": SECRET,
                "admin_port": 0,
                "snapshot_every": 300,
                "hot_tail_bytes": int(SMALL_TAIL),
                "send_rate": float(SEND_RATE),
            }
        )
        files = PowerLossFiles(sqlite=(store_path(data_dir),))
        ledger = Ledger()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                running: RunningServer = await nursery.start(partial(serve, config, files=files))
                await set_up(running)
                nursery.start_soon(run_until_killed, running, ledger, crash)
                await ledger.wait_acked(rng.randint(300, 1500))
                nursery.cancel_scope.cancel()  # the power goes: nothing more reaches the disk
            files.crash()
            lost_store = files.sqlite_durable.get(store_path(data_dir)) is None
            async with trio.open_nursery() as nursery:
                running = await nursery.start(serve, config)
                await check(running, ledger)
                sample = rng.sample(sorted(ledger.acked), min(30, len(ledger.acked)))
                assert await retry(running, ledger, sample) == len(sample)
                running.stop.set()
        found = verify(data_dir, Limits())
        assert not found.damaged, found.damage
        print(f"crash {crash}: {len(ledger.acked)} acked; store never synced: {lost_store}")


async def test_a_failing_checkpoint_keeps_the_log_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots go on while the store takes nothing in; the log they would trim is all
    the store has to catch up from after a power loss."""
    write = HistoryStore.write

    def failing(store: HistoryStore, records: Any) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(HistoryStore, "write", failing)
    config = build(
        {
            "port": 0,
            "data_dir": tmp_path,
            "auth_secret": SECRET,
            "admin_port": 0,
            "snapshot_every": 200,
            "send_rate": float(SEND_RATE),
        }
    )
    files = PowerLossFiles(sqlite=(store_path(tmp_path),))
    ledger = Ledger()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            running: RunningServer = await nursery.start(partial(serve, config, files=files))
            await set_up(running)
            nursery.start_soon(run_until_killed, running, ledger, 0)
            await ledger.wait_acked(1000)  # five snapshots' worth
            assert len(list_snapshots(snapshot_dir(tmp_path))) >= 2
            nursery.cancel_scope.cancel()
        files.crash()
        monkeypatch.setattr(HistoryStore, "write", write)
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve, config)
            await check(running, ledger)
            running.stop.set()
