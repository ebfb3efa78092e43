"""A damaged history store: `imcore-admin verify` names the damage, `--repair` rebuilds the
store from the log and what of it still reads back, and says exactly what was lost."""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Any

import cbor2
import pytest
import trio

from imcore.core.wal_format import SEGMENT_MAGIC, encode_record, scan_segment
from imcore.server.layout import list_segments, wal_dir
from imcore.server.store import store_path
from tests.helpers.client import open_client
from tests.helpers.process import ServerProcess, run_admin, run_serve_once

if TYPE_CHECKING:
    from pathlib import Path

    from imcore.server import RunningServer

DM = "dm:alice:bob"
#: Each run of the server sends this many; the first run's events end up in the store
#: alone (two snapshots later, their log segment is deleted), the second's in both.
PER_RUN = 10


def body(i: int, tag: str = "message") -> dict[str, Any]:
    return {"i": i, "text": f"{tag}-{i:04d}-end"}


async def send(server: RunningServer, start: int, count: int, tag: str = "message") -> None:
    async with open_client(server, "alice") as alice:
        for i in range(start, start + count):
            ack = await alice.request(op="send", conv=DM, cmid=f"{tag}{i}", body=body(i, tag))
            assert ack["seq"] == i + 1, ack


async def history(server: RunningServer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The last batch (head, floor) and every event of the DM, as bob syncs them."""
    async with open_client(server, "bob") as bob:
        msgs: list[dict[str, Any]] = []
        after = 0
        while True:
            batch = await bob.request(op="sync", conv=DM, after=after, limit=1000)
            msgs += batch["msgs"]
            if not batch["more"]:
                return batch, msgs
            after = msgs[-1]["seq"]


async def stopped(server: ServerProcess) -> str:
    """Stop it gracefully; its log."""
    server.terminate()
    code, log = await server.exit()
    assert code == 0, log
    return log


async def store_and_log(data_dir: Path) -> None:
    """Seqs 1..10 of the DM in the store alone, 11..20 in the store and the log."""
    for run in range(2):  # each graceful stop writes a snapshot, then prunes the log
        server = ServerProcess(data_dir)
        try:
            await send(await server.start(), run * PER_RUN, PER_RUN)
        finally:
            await stopped(server)
    (first, _), *_ = list_segments(wal_dir(data_dir))
    assert first == PER_RUN + 1, "the first run's segment should be gone"


async def verify(data_dir: Path, *flags: str) -> tuple[int, str]:
    done = await run_admin("verify", "--data-dir", str(data_dir), *flags)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def served(data_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    server = ServerProcess(data_dir)
    try:
        return await history(await server.start())
    finally:
        await stopped(server)


def store(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(store_path(data_dir), isolation_level=None)


async def test_rows_deleted_from_the_store_come_back_from_the_log_or_are_reported_lost(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        await store_and_log(tmp_path)
        code, report = await verify(tmp_path)
        assert code == 0, report
        with store(tmp_path) as db:
            db.execute("DELETE FROM events WHERE seq IN (3, 4, 5, 13, 14, 15)")
        code, report = await verify(tmp_path)
        assert code == 1, report
        assert f"{DM}: the store lacks seqs 13..15 (the log still has them)" in report
        assert f"{DM}: seqs 3..5 are in neither the store nor the log" in report

        code, report = await verify(tmp_path, "--repair")
        assert code == 0, report
        assert f"{DM}: seqs 3..5 lost: in neither the log nor the readable part" in report
        assert f"{DM}: floor raised from 1 to 6" in report
        assert "2 readable events below it are no longer served" in report
        assert report.rstrip().endswith("no damage found")
        assert any(name.startswith("history.sqlite3.damaged-") for name in os.listdir(tmp_path))

        batch, msgs = await served(tmp_path)
        assert (batch["head"], batch["floor"]) == (20, 6)
        assert [m["seq"] for m in msgs] == list(range(6, 21))
        assert [m["body"] for m in msgs] == [body(i) for i in range(5, 20)]
        assert (await verify(tmp_path))[0] == 0


@pytest.mark.parametrize("damage", ["flipped-header", "truncated"])
async def test_an_unreadable_store_stops_the_start_and_is_rebuilt_from_the_log(
    tmp_path: Path, damage: str
) -> None:
    with trio.fail_after(90):
        await store_and_log(tmp_path)
        path = store_path(tmp_path)
        data = bytearray(path.read_bytes())
        if damage == "flipped-header":
            for i in range(16):  # "SQLite format 3\0"
                data[i] ^= 0xFF
        else:
            del data[len(data) // 2 :]
        path.write_bytes(bytes(data))

        code, report = await verify(tmp_path)
        assert code == 1, report
        assert "history store: unreadable (" in report
        refused = await run_serve_once(tmp_path)
        assert refused.returncode == 1
        assert b"history store" in refused.stderr
        assert b"imcore serve --repair" in refused.stderr

        if damage == "flipped-header":
            code, report = await verify(tmp_path, "--repair")
            assert code == 0, report
        else:  # the server's own --repair does the same
            server = ServerProcess(tmp_path, "--repair")
            try:
                await server.start()
            finally:
                server.terminate()
                code, report = await server.exit()
            assert code == 0, report
        # Seqs 1..10 were in the store alone: exactly those are lost.
        assert f"{DM}: seqs 1..10 lost: in neither the log nor the readable part" in report
        assert f"{DM}: floor raised from 1 to 11" in report

        batch, msgs = await served(tmp_path)
        assert (batch["head"], batch["floor"]) == (20, 11)
        assert [m["body"] for m in msgs] == [body(i) for i in range(10, 20)]
        assert (await verify(tmp_path))[0] == 0


def flip_after(data: bytearray, marker: bytes) -> None:
    """Break the byte after `marker` in the file: the end of that event's stored row."""
    at = data.index(marker)
    assert data.count(marker) == 1
    data[at + len(marker)] = 0xFF  # a CBOR "break" where the row's last item belongs


async def test_flipped_bytes_in_stored_rows_are_found_and_repaired_from_the_log(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        await store_and_log(tmp_path)
        path = store_path(tmp_path)
        data = bytearray(path.read_bytes())
        flip_after(data, b"message-0006-end")  # seq 7: in the store alone
        flip_after(data, b"message-0016-end")  # seq 17: in the log as well
        path.write_bytes(bytes(data))

        code, report = await verify(tmp_path)
        assert code == 1, report
        assert f"{DM}: stored events that do not decode: seq 7: " in report
        assert "; seq 17: " in report
        assert f"{DM}: seqs 7 are in neither the store nor the log" in report
        assert f"{DM}: the store lacks seqs 17 (the log still has them)" in report

        code, report = await verify(tmp_path, "--repair")
        assert code == 0, report
        assert f"{DM}: seqs 7 lost" in report
        assert f"{DM}: floor raised from 1 to 8" in report
        repaired = report.split("REPAIRED")[1].split("after the repair")[0]
        assert "seqs 17" not in repaired  # the log had it
        batch, msgs = await served(tmp_path)
        assert batch["floor"] == 8
        assert [m["body"] for m in msgs] == [body(i) for i in range(7, 20)]


async def test_a_stored_event_that_differs_from_the_log_is_replaced_by_the_log(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        await store_and_log(tmp_path)
        with store(tmp_path) as db:
            (row,) = db.execute("SELECT row FROM events WHERE seq = 12").fetchone()
            changed = cbor2.loads(row)
            changed[1] += 1  # ts
            changed[6] = "changed"  # body
            db.execute("UPDATE events SET row = ? WHERE seq = 12", (cbor2.dumps(changed),))
        code, report = await verify(tmp_path)
        assert code == 1, report
        assert f"{DM}: stored events that differ from the log: seq 12 (ts, body)" in report
        code, report = await verify(tmp_path, "--repair")
        assert code == 0, report
        assert "lost" not in report
        _, msgs = await served(tmp_path)
        assert [m["body"] for m in msgs] == [body(i) for i in range(20)]


async def test_a_store_ahead_of_its_log_is_rolled_back_at_the_next_start(
    tmp_path: Path,
) -> None:
    """The log lost its last records and the store kept them (a power loss under
    `--fsync interval`): the next records take their LSNs and seqs again, and must reach
    the store in place of the lost ones."""
    with trio.fail_after(90):
        for _ in range(2):  # the second start feeds the store every record; no snapshot
            server = ServerProcess(tmp_path)
            try:
                running = await server.start()
                if not list_segments(wal_dir(tmp_path)):
                    await send(running, 0, 20)
            finally:
                server.kill()
                await server.exit()
        with store(tmp_path) as db:
            assert db.execute("SELECT value FROM meta WHERE key = 'lsn'").fetchone() == (20,)
        ((first, segment),) = list_segments(wal_dir(tmp_path))
        records = scan_segment(segment.read_bytes(), first).records
        kept = b"".join(encode_record(r.lsn, r.record) for r in records if r.lsn <= 15)
        segment.write_bytes(SEGMENT_MAGIC + kept)  # the power went: the last 5 are gone

        code, report = await verify(tmp_path)
        assert code == 0, report
        assert "store ahead:    records 16..20 are in the store but no longer in the log" in report

        server = ServerProcess(tmp_path)
        try:
            await send(await server.start(), 15, 5, tag="again")  # seqs 16..20 once more
        finally:
            log = await stopped(server)
        server = ServerProcess(tmp_path, "--hot-tail-bytes", "1")  # every page from the store
        try:
            _, msgs = await history(await server.start())
        finally:
            await stopped(server)
        expected = [body(i) for i in range(15)] + [body(i, "again") for i in range(15, 20)]
        assert [m["body"] for m in msgs] == expected
        assert "the store was ahead of the log: cut back" in log
        assert "deleted=5" in log
        assert (await verify(tmp_path))[0] == 0
