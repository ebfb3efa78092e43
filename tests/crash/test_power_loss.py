"""A simulated power loss: everything written after the last fsync vanishes (spec §7).

The server runs in-process on a file layer that remembers what each fsync made durable;
at a random moment of a concurrent workload the server is cancelled where it stands and
the files are cut back to their durable state, then a fresh server recovers from them.
"""

from __future__ import annotations

import random
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from imcore.config import build
from imcore.server import RunningServer, serve
from tests.helpers.core import SECRET
from tests.helpers.files import PowerLossFiles

from .workload import Ledger, check, run_until_killed, set_up

if TYPE_CHECKING:
    from pathlib import Path

# Long enough that a crash usually finds acked records not yet fsynced under `interval`.
INTERVAL_MS = 400
CRASHES = 3


@pytest.mark.parametrize("fsync", ["always", "interval"])
async def test_power_loss_keeps_every_acked_event_the_policy_promises(
    tmp_path: Path, fsync: str
) -> None:
    rng = random.Random(f"power-{fsync}")
    for crash in range(CRASHES):
        config = build(
            {
                "port": 0,
                "data_dir": tmp_path / f"run{crash}",
                "auth_secret": SECRET,
                "admin_port": 0,
                "fsync": fsync,
                "fsync_interval_ms": INTERVAL_MS,
                "snapshot_every": 300,
            }
        )
        files = PowerLossFiles()
        ledger = Ledger()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                running: RunningServer = await nursery.start(partial(serve, config, files=files))
                await set_up(running)
                nursery.start_soon(run_until_killed, running, ledger, crash)
                await trio.sleep(rng.uniform(0.2, 0.8))
                crashed_at = trio.current_time()
                nursery.cancel_scope.cancel()  # the power goes: nothing more reaches the disk
            files.crash()
            async with trio.open_nursery() as nursery:
                running = await nursery.start(serve, config)
                _, missing = await check(running, ledger, lossy=fsync == "interval")
                nursery.cancel_scope.cancel()
        assert len(ledger.acked) > 20
        late = crashed_at - 2 * INTERVAL_MS / 1000  # one interval, and the fsync's own time
        assert all(ledger.acked_at[key] > late for key in missing), "lost more than an interval"
        print(f"fsync={fsync} crash {crash}: {len(ledger.acked)} acked, {len(missing)} lost")
