"""`imcore-admin backup` of a real server under load: a server started on the copy has
every event acked before the backup began; a kill -9 of the server or of the backup
mid-way loses nothing acked, and a half-made backup never takes the backup's name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import trio

from tests.helpers.process import ServerProcess, run_admin

from .workload import Ledger, check, run_until_killed, set_up

if TYPE_CHECKING:
    from pathlib import Path

SEND_RATE = "1000000"  # far above what the workload sends (see test_kill)
#: Small, so that snapshots come, roll the log and delete segments while the backup runs.
SNAPSHOT_EVERY = "150"
#: `backup` in a process of its own that stops after the step named by its third
#: argument, until a line arrives on its standard input.
PAUSING_BACKUP = """
import sys
from pathlib import Path

from imcore.server.backup import backup


def progress(line):
    print(line, flush=True)
    if line.startswith(sys.argv[3]):
        print("PAUSED", flush=True)
        sys.stdin.readline()


backup(Path(sys.argv[1]), Path(sys.argv[2]), progress=progress)
print("DONE", flush=True)
"""


def loaded(data_dir: Path) -> ServerProcess:
    return ServerProcess(
        data_dir,
        "--snapshot-every",
        SNAPSHOT_EVERY,
        "--send-rate",
        SEND_RATE,
        "--hot-tail-bytes",
        "20000",
    )


async def check_copy(
    copy: Path, ledger: Ledger, acked_before: dict[tuple[str, str, str], tuple[int, int]]
) -> None:
    """A server on `copy` has every event of `acked_before`, exactly as acked."""
    server = ServerProcess(copy)
    try:
        running = await server.start()
        await check(running, Ledger(sent=ledger.sent, acked=acked_before))
    finally:
        await server.aclose()
    verified = await run_admin("verify", "--data-dir", str(copy))
    assert verified.returncode == 0, verified.stdout.decode()


async def test_a_backup_under_load_has_every_event_acked_before_it_began(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "copy"
    ledger = Ledger()
    server = loaded(data)
    with trio.fail_after(120):
        try:
            running = await server.start()
            await set_up(running)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_until_killed, running, ledger, 0)
                await ledger.wait_acked(400)
                acked_before = dict(ledger.acked)
                made = await run_admin("backup", "--data-dir", str(data), "--to", str(copy))
                await ledger.wait_acked(len(ledger.acked) + 100)  # and the sends went on
                server.kill()
            await server.exit()
        finally:
            await server.aclose()
        assert made.returncode == 0, made.stderr.decode()
        assert b"backup complete" in made.stdout
        manifest = json.loads((copy / "BACKUP").read_text())
        assert manifest["log_last"] >= max(seq for seq, _ in acked_before.values())
        assert not (tmp_path / "copy.partial").exists()
        assert len(acked_before) < len(ledger.acked)
        await check_copy(copy, ledger, acked_before)
        again = await run_admin("backup", "--data-dir", str(data), "--to", str(copy))
        assert again.returncode == 1
        assert b"exists" in again.stderr


async def read_until(process: trio.Process, marker: bytes) -> bytes:
    assert process.stdout is not None
    seen = b""
    while marker not in seen:
        chunk = await process.stdout.receive_some(4096)
        assert chunk, seen
        seen += chunk
    return seen


@pytest.mark.parametrize("killed", ["server", "backup"])
async def test_a_kill_during_a_backup_loses_nothing_and_leaves_no_half_backup(
    tmp_path: Path, killed: str
) -> None:
    data, copy = tmp_path / "data", tmp_path / "copy"
    partial = tmp_path / "copy.partial"
    ledger = Ledger()
    server = loaded(data)
    # The server dies once the store is copied; the backup dies with the store and a
    # snapshot copied, before the log.
    step = "history store copied" if killed == "server" else "log:"
    command = [sys.executable, "-c", PAUSING_BACKUP, str(data), str(copy), step]
    child: trio.Process | None = None
    with trio.fail_after(120):
        try:
            running = await server.start()
            await set_up(running)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_until_killed, running, ledger, 0)
                await ledger.wait_acked(400)
                acked_before = dict(ledger.acked)
                child = await trio.lowlevel.open_process(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
                await read_until(child, b"PAUSED\n")
                await ledger.wait_acked(len(ledger.acked) + 100)
                if killed == "backup":
                    os.kill(child.pid, signal.SIGKILL)
                    assert await child.wait() == -signal.SIGKILL
                server.kill()
            await server.exit()
            if killed == "server":
                assert child.stdin is not None
                await child.stdin.send_all(b"go on\n")
                await read_until(child, b"DONE\n")
                assert await child.wait() == 0
        finally:
            await server.aclose()
            if child is not None and child.returncode is None:
                os.kill(child.pid, signal.SIGKILL)
                await child.wait()

        # The original comes back with everything it acked.
        server = ServerProcess(data)
        try:
            await check(await server.start(), ledger)
        finally:
            await server.aclose()

        if killed == "server":
            assert not partial.exists()
            await check_copy(copy, ledger, acked_before)
            return
        assert not copy.exists(), "a half-made backup took the backup's name"
        assert partial.exists()
        made = await run_admin("backup", "--data-dir", str(data), "--to", str(copy))
        assert made.returncode == 0, made.stderr.decode()
        assert b"left by a backup that did not finish" in made.stdout
        assert not partial.exists()
        await check_copy(copy, ledger, dict(ledger.acked))
