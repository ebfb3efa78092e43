"""The data directory's names: one owner, and names of other forms are not ours."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imcore.server.layout import (
    list_segments,
    list_snapshots,
    segment_path,
    snapshot_dir,
    snapshot_path,
    snapshot_temp_path,
    wal_dir,
)

if TYPE_CHECKING:
    from pathlib import Path


def test_names_carry_the_lsn_in_twenty_digits(tmp_path: Path) -> None:
    assert segment_path(tmp_path, 42).name == "00000000000000000042.wal"
    assert snapshot_path(tmp_path, 42).name == "00000000000000000042.snap"
    assert snapshot_temp_path(tmp_path, 42).name == "00000000000000000042.tmp"
    assert wal_dir(tmp_path) == tmp_path / "wal"
    assert snapshot_dir(tmp_path) == tmp_path / "snapshots"


def test_listing_reads_back_what_the_paths_name_and_nothing_else(tmp_path: Path) -> None:
    assert list_segments(tmp_path / "absent") == []
    for lsn in (300, 7, 12):
        segment_path(tmp_path, lsn).touch()
        snapshot_path(tmp_path, lsn).touch()
    snapshot_temp_path(tmp_path, 400).touch()
    for stray in ("42.wal", "00000000000000000042.wal.bak", "0000000000000000004x.wal", "LOCK"):
        (tmp_path / stray).touch()
    assert list_segments(tmp_path) == [(n, segment_path(tmp_path, n)) for n in (7, 12, 300)]
    assert list_snapshots(tmp_path) == [(n, snapshot_path(tmp_path, n)) for n in (7, 12, 300)]
