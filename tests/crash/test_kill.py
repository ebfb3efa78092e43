"""Crash tests: a real server killed with SIGKILL under load, again and again (spec §7)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest
import trio

from tests.helpers.process import ServerProcess, run_admin

from .workload import Ledger, check, retry, run_until_killed, set_up

if TYPE_CHECKING:
    from pathlib import Path

ROUNDS = 4
#: Each round's kill comes after this many more acks, drawn from a seeded RNG: a point the
#: workload reaches whatever the machine's speed. It spans `--snapshot-every 700`, so kills
#: fall before, during and after snapshots.
ACKS_PER_ROUND = (100, 1000)
#: Far above what the workload sends. At the default (50 a second per connection, bursts of
#: 100) sends are refused after about a second, a refused send is never acked, and each
#: device stops once its window of 16 is all refusals. The random 0.3-1.2 s sleep this
#: replaces mostly killed a server whose workload had already stopped that way (rounds
#: ended at 690-880 acks; the six devices' bursts alone are 600).
SEND_RATE = "1000000"


@pytest.mark.parametrize("fsync", ["always", "interval"])
async def test_kill_9_under_load_loses_no_acked_event(tmp_path: Path, fsync: str) -> None:
    rng = random.Random(f"kill-{fsync}")
    ledger = Ledger()
    server = ServerProcess(
        tmp_path, "--fsync", fsync, "--snapshot-every", "700", "--send-rate", SEND_RATE
    )
    with trio.fail_after(120):
        try:
            running = await server.start()
            await set_up(running)
            for round_no in range(ROUNDS):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_until_killed, running, ledger, round_no)
                    await ledger.wait_acked(len(ledger.acked) + rng.randint(*ACKS_PER_ROUND))
                    server.kill()
                await server.exit()
                running = await server.start()
                unacked = ledger.unacked()
                await check(running, ledger)
                await retry(running, ledger, unacked)
                sample = rng.sample(sorted(ledger.acked), min(20, len(ledger.acked)))
                assert await retry(running, ledger, sample) == len(sample)
                await check(running, ledger)
        finally:
            await server.aclose()
    verified = await run_admin("verify", "--data-dir", str(tmp_path))
    assert verified.returncode == 0, verified.stdout.decode()
    print(f"fsync={fsync}: {len(ledger.acked)} acked sends survived {ROUNDS} kills")
