"""Where the log and the snapshots live in a data directory, and how their files are named.

The one owner of those names: the WAL, the snapshotter, recovery, `verify`, the admin
commands, tools and tests all ask here rather than build or parse a name themselves.

    <data-dir>/wal/<first LSN>.wal        a segment, named by the LSN of its first record
    <data-dir>/snapshots/<LSN>.snap       a snapshot, named by the LSN it covers
    <data-dir>/snapshots/<LSN>.tmp        a snapshot being written (renamed once whole)

An LSN in a name is 20 decimal digits (a u64), so names sort as their numbers do; a file
whose name is not of that form is not one of ours and is ignored. Must not: read or write
what the files hold (that is `core.wal_format`, `core.snapshot` and `files`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

_DIGITS = 20  # the decimal digits of the largest u64
_SEGMENT, _SNAPSHOT, _TEMP = "wal", "snap", "tmp"


def format_path(data_dir: Path) -> Path:
    """The file that holds the data directory's format version."""
    return data_dir / "FORMAT"


def wal_dir(data_dir: Path) -> Path:
    """The directory of the log's segments."""
    return data_dir / "wal"


def snapshot_dir(data_dir: Path) -> Path:
    """The directory of the snapshots."""
    return data_dir / "snapshots"


def segment_path(directory: Path, first_lsn: int) -> Path:
    """The segment whose first record has LSN `first_lsn`, in the WAL directory."""
    return directory / _name(first_lsn, _SEGMENT)


def snapshot_path(directory: Path, lsn: int) -> Path:
    """The snapshot that covers the log up to `lsn`, in the snapshot directory."""
    return directory / _name(lsn, _SNAPSHOT)


def snapshot_temp_path(directory: Path, lsn: int) -> Path:
    """Where the snapshot of `lsn` is written before it is renamed to `snapshot_path`."""
    return directory / _name(lsn, _TEMP)


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first LSN, path) of every segment in the WAL directory, in LSN order."""
    return _numbered(directory, _SEGMENT)


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    """(LSN, path) of every snapshot in the snapshot directory, oldest first."""
    return _numbered(directory, _SNAPSHOT)


def segments_after(segments: list[tuple[int, Path]], lsn: int) -> list[tuple[int, Path]]:
    """Of `segments` (as `list_segments` gives them), the ones that may hold records after
    `lsn`: from the last one starting at or below `lsn + 1` on."""
    start = 0
    for i, (first, _) in enumerate(segments):
        if first <= lsn + 1:
            start = i
    return segments[start:]


def _number(name: str, ext: str) -> int | None:
    stem, dot, found = name.partition(".")
    if dot and found == ext and stem.isdigit() and len(stem) == _DIGITS:
        return int(stem)
    return None


def _name(lsn: int, ext: str) -> str:
    return f"{lsn:0{_DIGITS}d}.{ext}"


def _numbered(directory: Path, ext: str) -> list[tuple[int, Path]]:
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            number = _number(path.name, ext)
            if number is not None:
                found.append((number, path))
    return sorted(found)
