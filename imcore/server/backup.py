"""`imcore-admin backup`: a consistent copy of a data directory, taken while a server runs
on it, without asking the server anything. Must not: write to the data directory it
copies, or leave anything at the destination that is not a whole backup.

A server started on the copy has every event acked before the backup began. The order
is what makes it so:

1. The history store, through SQLite's online backup (one read transaction: a
   consistent store as of some LSN `S`, taken while the server's checkpoint goes on).
2. The newest snapshot that decodes (LSN `B`).
3. The log from `min(S, B) + 1` to its end, every segment opened before any is read: a
   record acked before the backup began is in the log's files by then, so it is in the
   copy. The last segment may be taken mid-append; its torn tail is what a crash leaves,
   and the server started on the copy truncates it.

The server deletes a segment once its durable store and its oldest kept snapshot both
cover it, so while the backup runs, a segment it still needs (one after `S`) can go. That
shows as a missing first segment or a file gone between the listing and its opening;
the attempt then starts again from step 1 (a newer store, a newer snapshot), up to
`ATTEMPTS` times.

Everything is written to `<to>.partial`, fsynced, and renamed to `<to>` at the very end,
with a `BACKUP` manifest inside: a directory named `<to>` is always a whole backup. A
`<to>.partial` left by a backup that was killed is removed by the next backup to `<to>`
(a lock in it tells a live one from a dead one).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..core.snapshot import SnapshotError, decode
from ..core.wal_format import Corrupt, scan_segment
from .datadir import FORMAT_VERSION, StartupError, read_format
from .layout import (
    format_path,
    list_segments,
    list_snapshots,
    segments_after,
    snapshot_dir,
    wal_dir,
)
from .store import HistoryStore, store_path

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MANIFEST = "BACKUP"
PARTIAL = ".partial"
#: Tries before giving up on a server that deletes log segments faster than they are
#: copied (each try starts from a newer store and snapshot, which need fewer of them).
ATTEMPTS = 5
_LOCK = "LOCK"  # the name a server's lock has too: a server started on the copy reuses it


class BackupError(Exception):
    """The backup cannot be made; the message says why. Nothing was left at the
    destination."""


class _Retry(Exception):
    """A segment the copy needs was deleted by the server meanwhile."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What a backup holds (also its `BACKUP` manifest)."""

    store_lsn: int  # the store copy holds every record up to here
    snapshot_lsn: int  # 0: no snapshot (the log starts at 1)
    log_first: int  # the copied log's first record (log_last + 1 when none)
    log_last: int  # its last whole record: nothing acked before the backup began is later
    segments: int
    bytes: int
    attempts: int
    made: str  # UTC, ISO 8601


def backup(
    data_dir: Path, to: Path, *, progress: Callable[[str], None] = lambda _: None
) -> BackupReport:
    """Copy `data_dir` to the new directory `to`.

    Args:
        data_dir: a data directory, with or without a server running on it.
        to: where the backup goes; must not exist. `<to>.partial` is used meanwhile.
        progress: told each step, a line each.

    Raises:
        BackupError: `to` exists, another backup to it is running, the data directory
            is not one of this version, its log is damaged, or the server kept deleting
            what was needed.
    """
    if to.exists():
        raise BackupError(f"{to} exists: a backup goes to a new directory")
    try:
        version = read_format(data_dir)
    except StartupError as exc:
        raise BackupError(str(exc)) from None
    if version is None or not store_path(data_dir).exists():
        raise BackupError(f"{data_dir} holds no imcore data directory of format 2")
    if version != FORMAT_VERSION:
        raise BackupError(
            f"{data_dir} is in format {version}: start a server on it once (it upgrades the "
            f"directory), then back it up"
        )
    partial = to.with_name(to.name + PARTIAL)
    lock = _lock(partial, progress)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            _clear(partial)
            try:
                report = _copy(data_dir, partial, attempt, progress)
                break
            except _Retry as exc:
                progress(f"{exc}; starting again from a newer store and snapshot")
        else:
            raise BackupError(
                f"the server deleted log segments the copy needed {ATTEMPTS} times: "
                f"try again, or take snapshots less often during a backup"
            )
        for name in (format_path(data_dir).name, "secret"):
            if (data_dir / name).exists():
                _copy_file(data_dir / name, partial / name)
        manifest = partial / MANIFEST
        manifest.write_text(json.dumps(asdict(report), indent=2) + "\n")
        _fsync(manifest)
        for directory in (wal_dir(partial), snapshot_dir(partial), partial):
            if directory.is_dir():
                _fsync(directory)
        if to.exists():
            raise BackupError(f"{to} appeared while the backup ran")
        os.rename(partial, to)
        _fsync(to.parent)
    finally:
        os.close(lock)
    progress(f"backup complete in {to}")
    return report


def _lock(partial: Path, progress: Callable[[str], None]) -> int:
    """Hold `<partial>/LOCK`; a leftover of a dead backup is cleared by the caller."""
    partial.mkdir(parents=True, exist_ok=True)
    fd = os.open(partial / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BackupError(f"another backup is writing {partial}") from None
    if any(p.name != _LOCK for p in partial.iterdir()):
        progress(f"removing {partial.name}, left by a backup that did not finish")
    return fd


def _clear(partial: Path) -> None:
    for path in partial.iterdir():
        if path.name == _LOCK:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _copy(
    data_dir: Path, partial: Path, attempt: int, progress: Callable[[str], None]
) -> BackupReport:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    store = HistoryStore(store_path(data_dir), readonly=True)
    try:
        store_lsn = store.backup(store_path(partial))
    finally:
        store.close()
    _fsync(store_path(partial))
    progress(f"history store copied: lsn {store_lsn}")
    snapshot_lsn = _copy_snapshot(data_dir, partial)
    progress(f"snapshot copied: lsn {snapshot_lsn}" if snapshot_lsn else "no snapshot yet")
    base = min(store_lsn, snapshot_lsn)
    segments = segments_after(list_segments(wal_dir(data_dir)), base)
    if segments and segments[0][0] > base + 1:
        raise _Retry(f"the log now starts at lsn {segments[0][0]}, after {base + 1}")
    progress(f"log: {len(segments)} segments from lsn {base + 1} on")
    opened = []
    try:
        for first, path in segments:
            try:
                opened.append((first, path.name, open(path, "rb")))  # noqa: SIM115
            except FileNotFoundError:
                raise _Retry(f"{path.name} was deleted before it was copied") from None
        wal_dir(partial).mkdir()
        for _, name, source in opened:
            with open(wal_dir(partial) / name, "wb") as target:
                shutil.copyfileobj(source, target)
                target.flush()
                os.fsync(target.fileno())
    finally:
        for _, _, source in opened:
            source.close()
    log_first, log_last = _check_log(partial, base)
    if log_last < max(store_lsn, snapshot_lsn):
        raise BackupError(
            f"the copied log ends at lsn {log_last}, before the store's {store_lsn} or the "
            f"snapshot's {snapshot_lsn}: is a server of another version writing it?"
        )
    size = sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())
    progress(f"log copied: records {log_first}..{log_last}")
    return BackupReport(
        store_lsn=store_lsn,
        snapshot_lsn=snapshot_lsn,
        log_first=log_first,
        log_last=log_last,
        segments=len(opened),
        bytes=size,
        attempts=attempt,
        made=started,
    )


def _copy_snapshot(data_dir: Path, partial: Path) -> int:
    """Copy the newest snapshot that decodes; its LSN (0 when there is none)."""
    listed = list_snapshots(snapshot_dir(data_dir))
    damaged = []
    for lsn, path in reversed(listed):
        try:
            data = path.read_bytes()
            decode(data)
        except FileNotFoundError:
            raise _Retry(f"snapshot {path.name} was replaced before it was read") from None
        except SnapshotError as exc:
            damaged.append(f"{path.name} ({exc})")
            continue  # the server falls back to an older one as well
        snapshot_dir(partial).mkdir()
        target = snapshot_dir(partial) / path.name
        target.write_bytes(data)
        _fsync(target)
        return lsn
    if damaged:
        raise BackupError(f"no snapshot decodes: {'; '.join(damaged)}")
    return 0


def _check_log(partial: Path, base: int) -> tuple[int, int]:
    """(first, last) LSN of the copied log: contiguous from at most `base + 1`, only its
    very end torn."""
    segments = list_segments(wal_dir(partial))
    first = last = None
    for i, (start, path) in enumerate(segments):
        scan = scan_segment(path.read_bytes(), start)
        if isinstance(scan.damage, Corrupt) or (scan.damage and i < len(segments) - 1):
            raise BackupError(
                f"the log is damaged in {path.name} at byte {scan.damage.offset}: run "
                f"`imcore-admin verify` on the data directory"
            )
        if scan.records:
            if last is not None and scan.records[0].lsn != last + 1:
                raise BackupError(f"the log has a gap before {path.name}")
            first = scan.records[0].lsn if first is None else first
            last = scan.records[-1].lsn
    if first is None or last is None:
        return base + 1, base
    if first > base + 1:
        raise _Retry(f"the copied log starts at lsn {first}, after {base + 1}")
    return first, last


def _copy_file(source: Path, target: Path) -> None:
    shutil.copy2(source, target)
    _fsync(target)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
