"""SIGTERM under load (spec §11): close 1001, commit, snapshot, exit 0; nothing acked lost."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import trio

from tests.helpers.client import open_client
from tests.helpers.process import ServerProcess

from .workload import Ledger, check, run_until_killed, set_up

if TYPE_CHECKING:
    from pathlib import Path


async def test_sigterm_during_load_exits_0_and_keeps_every_acked_send(tmp_path: Path) -> None:
    rng = random.Random("sigterm")
    ledger = Ledger()
    server = ServerProcess(tmp_path)
    with trio.fail_after(60):
        try:
            running = await server.start()
            await set_up(running)
            async with open_client(running, "watcher") as watcher, trio.open_nursery() as nursery:
                nursery.start_soon(run_until_killed, running, ledger, 0)
                await trio.sleep(rng.uniform(0.5, 1.0))
                stopping = trio.current_time()
                server.terminate()
                assert await watcher.closed_with() == 1001
            code, log = await server.exit()
            assert code == 0, log
            assert trio.current_time() - stopping < 10
            assert "msg=snapshot lsn=" in log
            running = await server.start()
            await check(running, ledger)
            assert len(ledger.acked) > 50
        finally:
            await server.aclose()
