"""Damaged data directories: torn tails, flipped bits, bad snapshots, a second server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from imcore.core import CursorRecord, DeliveredRecord, Event
from imcore.core.frames import SysChange
from imcore.core.wal_format import SEGMENT_MAGIC, encode_record
from imcore.server.layout import (
    list_segments,
    list_snapshots,
    segment_path,
    snapshot_dir,
    wal_dir,
)
from tests.helpers.client import open_client
from tests.helpers.process import ServerProcess, run_admin, run_serve_once

if TYPE_CHECKING:
    from pathlib import Path

    from imcore.core import Record
    from imcore.server import RunningServer

DM = "dm:alice:bob"


async def send_some(server: RunningServer, start: int, count: int) -> None:
    async with open_client(server, "alice") as alice:
        for i in range(start, start + count):
            ack = await alice.request(op="send", conv=DM, cmid=f"m{i}", body={"i": i})
            assert ack["seq"] == i + 1


async def cmids(server: RunningServer) -> list[str]:
    async with open_client(server, "bob") as bob:
        batch = await bob.request(op="sync", conv=DM, after=0, limit=1000)
        return [m["cmid"] for m in batch["msgs"]]


async def test_a_flipped_bit_mid_log_is_refused_then_repaired(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    with trio.fail_after(60):
        try:
            await send_some(await server.start(), 0, 20)
        finally:
            server.kill()
            await server.exit()
        (_, segment), *_ = list_segments(wal_dir(tmp_path))
        data = bytearray(segment.read_bytes())
        middle = len(data) // 2
        data[middle] ^= 0x10
        segment.write_bytes(bytes(data))

        refused = await run_serve_once(tmp_path)
        message = refused.stderr.decode()
        assert refused.returncode == 1
        assert "imcore-admin verify" in message
        assert "--repair" in message
        verified = await run_admin("verify", "--data-dir", str(tmp_path))
        assert verified.returncode == 1
        assert b"DAMAGE" in verified.stdout

        repaired = ServerProcess(tmp_path, "--repair")
        try:
            running = await repaired.start()
            kept = await cmids(running)
            assert 0 < len(kept) < 20
            assert kept == [f"m{i}" for i in range(len(kept))]
            await send_some(running, len(kept), 1)
        finally:
            repaired.terminate()
            code, log = await repaired.exit()
        assert code == 0, log
        assert "repair truncated the log" in log
        assert "lost_bytes=" in log
        verified = await run_admin("verify", "--data-dir", str(tmp_path))
        assert verified.returncode == 0, verified.stdout.decode()


async def test_a_torn_tail_is_dropped_with_a_warning(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    with trio.fail_after(60):
        try:
            await send_some(await server.start(), 0, 5)
        finally:
            server.kill()
            await server.exit()
        (_, segment), *_ = list_segments(wal_dir(tmp_path))
        with segment.open("ab") as f:
            f.write(b"\x40\x00\x00\x00half a record")
        again = ServerProcess(tmp_path)
        try:
            assert await cmids(await again.start()) == [f"m{i}" for i in range(5)]
        finally:
            again.terminate()
            code, log = await again.exit()
        assert code == 0, log
        assert "torn tail truncated" in log
        assert "dropped_bytes=17" in log


@pytest.mark.parametrize("written", [b"", SEGMENT_MAGIC[:3]], ids=["empty", "part-of-magic"])
async def test_a_segment_created_just_before_a_crash_is_started_again(
    tmp_path: Path, written: bytes
) -> None:
    """A kill between creating a new segment and writing its magic leaves an empty file
    as the log's last segment. The next server must write the magic before its records:
    appending records to the empty file made a log that the one after refused."""
    server = ServerProcess(tmp_path)
    with trio.fail_after(60):
        try:
            await send_some(await server.start(), 0, 5)
        finally:
            server.kill()
            await server.exit()
        # the next segment, created, then the crash
        segment_path(wal_dir(tmp_path), 6).write_bytes(written)
        for start in (5, 8):  # a server on that directory, then one after it
            again = ServerProcess(tmp_path)
            try:
                running = await again.start()
                assert await cmids(running) == [f"m{i}" for i in range(start)]
                await send_some(running, start, 3)
            finally:
                again.kill()
                await again.exit()
        verified = await run_admin("verify", "--data-dir", str(tmp_path))
        assert verified.returncode == 0, verified.stdout.decode()


async def test_a_damaged_snapshot_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    with trio.fail_after(60):
        for start in (0, 5):  # each clean stop writes a snapshot
            server = ServerProcess(tmp_path)
            try:
                await send_some(await server.start(), start, 5)
            finally:
                server.terminate()
                code, log = await server.exit()
                assert code == 0, log
        snapshots = list_snapshots(snapshot_dir(tmp_path))
        assert len(snapshots) == 2
        newest = snapshots[-1][1]
        newest.write_bytes(newest.read_bytes()[:-10])
        server = ServerProcess(tmp_path)
        try:
            assert await cmids(await server.start()) == [f"m{i}" for i in range(10)]
        finally:
            server.terminate()
            code, log = await server.exit()
        assert code == 0, log
        assert "snapshot unusable" in log


async def test_verify_reports_cursors_no_client_could_have_moved(tmp_path: Path) -> None:
    records: list[Record] = [
        Event(conv=DM, seq=1, ts=1, sender="alice", dev="d", at=0, cmid="m", body=1),
        DeliveredRecord(DM, "bob", "phone", 1),
        CursorRecord(DM, "bob", "phone", 3),
        DeliveredRecord(DM, "alice", "d", 2),
        Event(conv="g:x", seq=1, ts=2, sender="a", dev="d", at=0, sys=SysChange(type="create")),
        DeliveredRecord("g:x", "a", "d", 1),
    ]
    segment = segment_path(wal_dir(tmp_path), 1)
    segment.parent.mkdir()
    encoded = (encode_record(lsn, r) for lsn, r in enumerate(records, 1))
    segment.write_bytes(SEGMENT_MAGIC + b"".join(encoded))
    with trio.fail_after(20):
        verified = await run_admin("verify", "--data-dir", str(tmp_path))
    report = verified.stdout.decode()
    assert verified.returncode == 1, report
    assert "wal records:    6" in report
    assert f"{DM}: read cursor of bob beyond head 1" in report
    assert f"{DM}: delivered cursor of alice beyond head 1" in report
    assert "g:x: a group holds delivered cursors" in report


async def test_a_second_server_on_the_same_directory_refuses_to_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    with trio.fail_after(60):
        try:
            await server.start()
            second = await run_serve_once(tmp_path)
            assert second.returncode == 1
            assert b"another imcore server is running" in second.stderr
        finally:
            server.terminate()
            code, log = await server.exit()
            assert code == 0, log
