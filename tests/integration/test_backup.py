"""`backup` against a server that deletes a log segment the copy still needs, at the two
moments it can: between the store's copy and the log's listing, and between the listing
and the opening of the segment. The copy starts again and is whole."""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from imcore.config import build
from imcore.server import RunningServer, serve
from imcore.server.backup import backup
from imcore.server.layout import list_segments, wal_dir
from tests.helpers.client import Client, open_client
from tests.helpers.core import SECRET

from .test_admin import call

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

DM = "dm:alice:bob"


def settings(data_dir: Path) -> dict[str, object]:
    return {"port": 0, "admin_port": 0, "data_dir": data_dir, "auth_secret": SECRET}


@asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[RunningServer]:
    async with trio.open_nursery() as nursery:
        server: RunningServer = await nursery.start(serve, build(settings(data_dir)))
        try:
            yield server
        finally:
            server.stop.set()


async def send(alice: Client, start: int, count: int) -> None:
    for i in range(start, start + count):
        ack = await alice.request(op="send", conv=DM, cmid=f"m{i}", body={"i": i})
        assert ack["seq"] == i + 1, ack


async def snapshot_once_stored(server: RunningServer) -> int:
    """A snapshot once the store holds every record: it deletes every older segment."""
    while (await call(server, "GET", "/status"))[1]["checkpoint_lag"]:
        pass
    return int((await call(server, "POST", "/snapshot"))[1]["lsn"])


@pytest.mark.parametrize("step", ["history store copied", "log:"])
async def test_a_backup_starts_again_when_a_segment_it_needs_is_deleted(
    tmp_path: Path, step: str
) -> None:
    data, copy = tmp_path / "data", tmp_path / "copy"
    lines: list[str] = []
    moved: list[bool] = []
    with trio.fail_after(60):
        async with running(data) as server, open_client(server, "alice", recv=False) as alice:
            await send(alice, 0, 30)
            token = trio.lowlevel.current_trio_token()

            async def server_moves_on() -> None:
                first_segment = list_segments(wal_dir(data))[0][0]
                for start in (30, 40):
                    await send(alice, start, 10)
                    await snapshot_once_stored(server)
                assert list_segments(wal_dir(data))[0][0] > first_segment

            def progress(line: str) -> None:  # in the backup's thread
                lines.append(line)
                if line.startswith(step) and not moved:
                    moved.append(True)
                    trio.from_thread.run(server_moves_on, trio_token=token)

            made = await trio.to_thread.run_sync(partial(backup, data, copy, progress=progress))
    assert made.attempts == 2, lines
    assert any("starting again" in line for line in lines), lines
    assert not (tmp_path / "copy.partial").exists()
    with trio.fail_after(30):
        async with running(copy) as server, open_client(server, "bob", recv=False) as bob:
            batch = await bob.request(op="sync", conv=DM, after=0, limit=100)
    assert [m["body"] for m in batch["msgs"]] == [{"i": i} for i in range(50)]
