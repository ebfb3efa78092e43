"""The data directory: its lock, and bringing the state back at start (spec §7).

    <data-dir>/LOCK             held (flock) while a server runs on the directory
    <data-dir>/FORMAT           the data directory's format version
    <data-dir>/secret           the token secret, unless one is configured
    <data-dir>/wal/             segments named by their first LSN      (see `layout`)
    <data-dir>/snapshots/       snapshots named by the LSN they cover  (see `layout`)
    <data-dir>/history.sqlite3  every event (see `store`)

At start: the newest snapshot that decodes (an older one if it is damaged), then every
record after it; the store is fed the records after its own LSN before anyone connects.
A torn tail is truncated with a warning naming the bytes dropped. Damage before the tail
stops the start unless `--repair` was given, which truncates the log at the damage and
reports what was lost.

Format versions: 1 (no FORMAT file) kept every event in the snapshots; 2 keeps them in the
store. A version 1 directory is upgraded on its first start: the events of its newest
snapshot go into the store, and a version 2 snapshot follows at once. A directory of a
newer version than this server knows is refused.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from ..core import ids
from ..core.recovery import RecoveryReport, recover
from ..core.snapshot import Snapshot, SnapshotError, decode
from ..core.wal_format import SEGMENT_MAGIC, TornTail, WalRecord, encode_record, scan_segment
from .layout import (
    format_path,
    list_segments,
    list_snapshots,
    segment_path,
    segments_after,
    snapshot_dir,
    wal_dir,
)
from .store import HistoryStore, store_path
from .store_check import LogIndex, StoreCheck, check_store, open_store, rebuild_store

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from ..core import Chat, Event, Limits
    from ..core.records import FloorRecord
    from .files import Files

log = logging.getLogger("imcore.recovery")


class StartupError(Exception):
    """The server cannot start on this data directory; the message says why and what to do."""


class DataDirLock:
    """An exclusive lock on `<data-dir>/LOCK`, so two servers never share a directory."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "LOCK"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise StartupError(
                f"another imcore server is running on {data_dir} (it holds {self.path})"
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        os.close(self._fd)


FORMAT_VERSION = 2


def read_format(data_dir: Path) -> int | None:
    """The data directory's format version; None for a new (empty) directory.

    Raises:
        StartupError: the FORMAT file is unreadable, or names a newer version.
    """
    path = format_path(data_dir)
    if not path.exists():
        had_state = list_snapshots(snapshot_dir(data_dir)) or list_segments(wal_dir(data_dir))
        return 1 if had_state else None
    try:
        version = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise StartupError(f"{path} is not a format version: {exc}") from None
    if version > FORMAT_VERSION:
        raise StartupError(
            f"{data_dir} has data format {version}, newer than this server's "
            f"({FORMAT_VERSION}): run the newer imcore release that wrote it"
        )
    return version


def write_format(data_dir: Path, files: Files) -> None:
    path = format_path(data_dir)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(f"{FORMAT_VERSION}\n")
    fd = files.open_append(temp, create=False)
    try:
        files.fsync(fd)
    finally:
        files.close(fd)
    files.replace(temp, path)
    files.fsync_dir(data_dir)


@dataclass(frozen=True, slots=True)
class Recovered:
    chat: Chat
    report: RecoveryReport
    segment: tuple[int, int] | None  # (first LSN, size) of the segment to append to
    store: HistoryStore
    upgraded: bool = False  # a version 1 directory: take a snapshot before serving


def load_snapshot(directory: Path) -> Snapshot | None:
    """The newest snapshot that is whole; damaged ones are skipped with a warning."""
    for lsn, path in reversed(list_snapshots(directory)):
        try:
            return decode(path.read_bytes())
        except (SnapshotError, OSError) as exc:
            fields = {"file": path.name, "error": str(exc), "next": "an older snapshot"}
            log.warning("snapshot unusable", extra={"fields": fields})
        del lsn
    return None


def _needed(segments: list[tuple[int, Path]], base: int) -> list[tuple[int, Path]]:
    """The segments that hold records after `base`."""
    return segments_after(segments, base)


def _upgrade(snapshot: Snapshot, store: HistoryStore) -> None:
    """Move the events of a format 1 snapshot into the store (again, if a crash cut the
    first try short: the store then has less than the snapshot's LSN)."""
    if store.lsn >= snapshot.lsn:
        return
    events = (e for state in snapshot.conversations for e in state.events)
    store.write_events(events, snapshot.lsn)
    fields = {
        "events": sum(len(state.events) for state in snapshot.conversations),
        "lsn": snapshot.lsn,
    }
    log.warning("upgrading the data directory: events moved to the store", extra={"fields": fields})


def _open_store(data_dir: Path) -> HistoryStore:
    try:
        return HistoryStore(store_path(data_dir))
    except sqlite3.Error as exc:
        raise StartupError(
            f"the history store {store_path(data_dir)} is unreadable ({exc}). Run "
            f"`imcore-admin verify --data-dir {data_dir}` for details; `imcore serve --repair` "
            f"rebuilds it from the log and what of it still reads back."
        ) from None


def open_state(
    data_dir: Path,
    limits: Limits,
    files: Files,
    *,
    repair: bool,
    tail_bytes: int | None = None,
) -> Recovered:
    """Recover the state from `data_dir`, truncating a torn tail (and damage, if `repair`),
    and bring the store up to date with the log: fed what it lacks, or rolled back to the
    log's last record if it is ahead. With `repair`, a store that cannot serve (unreadable,
    or missing records the log no longer has) is rebuilt first
    (`store_check.rebuild_store`), and every loss logged.

    Raises:
        StartupError: damage before the tail, or a store that cannot serve, and no
            `repair`; a newer format.
    """
    version = read_format(data_dir)
    snapshot = load_snapshot(snapshot_dir(data_dir))
    upgraded = snapshot is not None and snapshot.version < 3
    if repair and not upgraded:
        for line in repair_damage(data_dir, limits, snapshot, files, rebuild=False):
            log.warning("repair", extra={"fields": {"done": line}})
    store = _open_store(data_dir)
    if upgraded:
        assert snapshot is not None
        _upgrade(snapshot, store)
    base = 0 if snapshot is None else snapshot.lsn
    needed = _needed(list_segments(wal_dir(data_dir)), min(base, store.lsn))
    if needed and needed[0][0] > store.lsn + 1 and store.lsn < base:
        store.close()
        raise StartupError(
            f"the history store holds records up to {store.lsn} and the log starts at "
            f"{needed[0][0]}: records {store.lsn + 1}..{needed[0][0] - 1} are in neither. "
            f"Run `imcore-admin verify --data-dir {data_dir}`; `imcore serve --repair` "
            f"rebuilds the store and says what is lost."
        )
    chat, report = recover(
        limits,
        snapshot,
        [(first, path.read_bytes()) for first, path in needed],
        tail_bytes=tail_bytes,
        store_lsn=store.lsn,
    )
    paths = dict(needed)
    if report.corrupt is not None:
        first, damage = report.corrupt
        where = f"{paths[first].name} at byte {damage.offset}"
        if not repair:
            store.close()
            raise StartupError(
                f"the write-ahead log is damaged in {where}: {damage.reason}. "
                f"Records after it cannot be trusted. Run `imcore-admin verify --data-dir "
                f"{data_dir}` for details; `imcore serve --repair` truncates the log there "
                f"(losing what follows) and starts."
            )
        _repair(paths, first, damage.offset, report, files)
    if report.torn is not None:
        first, torn = report.torn
        fields = {"file": paths[first].name, "dropped_bytes": torn.dropped, "lsn": report.last_lsn}
        log.warning("torn tail truncated", extra={"fields": fields})
        _truncate(paths[first], torn.offset, files)
    if store.lsn > report.last_lsn:
        heads = {conv: chat.head(conv) for conv in chat.conversation_ids()}
        fields = {"store_lsn_was": store.lsn, "log_lsn": report.last_lsn}
        fields["deleted"] = store.truncate_after(heads, report.last_lsn)
        log.warning("the store was ahead of the log: cut back", extra={"fields": fields})
        # Durable before the log takes new records at those LSNs: a store that came back
        # ahead after a second power loss would keep the lost events under the new seqs.
        store.sync()
    to_store = [r for r in report.to_store if r.lsn <= report.last_lsn]
    for start in range(0, len(to_store), 5000):
        store.write(to_store[start : start + 5000])
    report.to_store = []
    chat.stored(store.lsn)
    segment = None
    remaining = list_segments(wal_dir(data_dir))
    if remaining:
        first, path = remaining[-1]
        if path.exists():
            segment = (first, path.stat().st_size)
    if version != FORMAT_VERSION and not upgraded:
        write_format(data_dir, files)  # a new directory (an upgrade writes it after its snapshot)
    fields = {
        "snapshot_lsn": report.snapshot_lsn,
        "replayed": report.replayed,
        "stored": len(to_store),
        "store_lsn": store.lsn,
        "last_lsn": report.last_lsn,
        "conversations": len(chat.conversation_ids()),
    }
    log.info("recovered", extra={"fields": fields})
    return Recovered(chat, report, segment, store, upgraded)


def _recover_readonly(
    data_dir: Path, limits: Limits, snapshot: Snapshot | None
) -> tuple[Chat, RecoveryReport]:
    """The state as a start would recover it, without changing a byte on disk."""
    segments = list_segments(wal_dir(data_dir))
    base = 0 if snapshot is None else snapshot.lsn
    return recover(
        limits, snapshot, [(first, path.read_bytes()) for first, path in _needed(segments, base)]
    )


def _log_records(data_dir: Path) -> Iterator[WalRecord]:
    """Every whole record of the log, a segment at a time, in LSN order."""
    for first, path in list_segments(wal_dir(data_dir)):
        yield from scan_segment(path.read_bytes(), first).records


def _log_index(data_dir: Path, report: RecoveryReport) -> LogIndex:
    """The events of the log up to the last record recovery kept."""
    return LogIndex.of(_log_records(data_dir), report.last_lsn)


class OfflineHistory:
    """Old history for the offline views: the store (read only), and the log's events the
    store does not hold yet. Answers a `ReadPage` of the core (`read_page`)."""

    def __init__(self, store: HistoryStore | None, log: LogIndex) -> None:
        self.store = store
        self.log = log

    def read_page(self, conv: str, low: int, high: int) -> list[Event]:
        found = (
            {} if self.store is None else {e.seq: e for e in self.store.read_page(conv, low, high)}
        )
        logged = self.log.events.get(conv, {})
        if len(logged) < high - low + 1:
            found.update((seq, e) for seq, (_, e) in logged.items() if low <= seq <= high)
        else:
            found.update((seq, logged[seq][1]) for seq in range(low, high + 1) if seq in logged)
        return [found[seq] for seq in sorted(found)]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def inspect(data_dir: Path, limits: Limits) -> tuple[Chat, RecoveryReport, OfflineHistory]:
    """The state a server would start with, for `imcore-admin inspect` (reads only), and
    where its old history is read. Close the history when done.

    Raises:
        sqlite3.Error: the store cannot be read (`verify` says more).
    """
    chat, report = _recover_readonly(data_dir, limits, load_snapshot(snapshot_dir(data_dir)))
    store, unreadable = open_store(data_dir)
    if unreadable is not None:
        raise sqlite3.DatabaseError(unreadable)
    return chat, report, OfflineHistory(store, _log_index(data_dir, report))


def _truncate(path: Path, offset: int, files: Files) -> None:
    if offset < len(SEGMENT_MAGIC):
        files.remove(path)  # not even a whole header: nothing to keep
    else:
        files.truncate(path, offset)


def _repair(
    paths: dict[int, Path], first: int, offset: int, report: RecoveryReport, files: Files
) -> str:
    """Truncate the log at the damage and delete what follows; log exactly what is lost.
    Returns the same as a line."""
    path = paths[first]
    lost_bytes = path.stat().st_size - offset
    lost_records = 0
    for later in report.unread_segments:
        later_path = paths[later]
        lost_bytes += later_path.stat().st_size
        lost_records += len(scan_segment(later_path.read_bytes(), later).records)
        files.remove(later_path)
    _truncate(path, offset, files)
    fields = {
        "file": path.name,
        "at_byte": offset,
        "lost_bytes": lost_bytes,
        "lost_records_in_later_segments": lost_records,
        "later_segments_deleted": len(report.unread_segments),
        "last_lsn": report.last_lsn,
    }
    log.warning("repair truncated the log", extra={"fields": fields})
    report.corrupt = None
    report.torn = None
    return (
        f"log truncated in {path.name} at byte {offset}: {lost_bytes} bytes lost after "
        f"lsn {report.last_lsn} ({lost_records} records in {len(report.unread_segments)} "
        f"later segments deleted)"
    )


def _append_log(data_dir: Path, files: Files, first_lsn: int, records: list[FloorRecord]) -> None:
    """Append `records` to the log from `first_lsn` on, durably: to the last segment (its
    torn tail cut first), or to a new one when there is none."""
    directory = wal_dir(data_dir)
    data = b"".join(encode_record(first_lsn + i, r) for i, r in enumerate(records))
    segments = list_segments(directory)
    if segments:
        first, path = segments[-1]
        scan = scan_segment(path.read_bytes(), first)
        if scan.damage is not None and not isinstance(scan.damage, TornTail):
            raise StartupError(f"{path.name} is damaged at byte {scan.damage.offset}")
        last = scan.records[-1].lsn if scan.records else first - 1
        if last + 1 != first_lsn:
            raise StartupError(f"the log ends at lsn {last}, not {first_lsn - 1}")
        if scan.damage is not None:
            _truncate(path, scan.end, files)
    if segments and segments[-1][1].exists():
        fd = files.open_append(segments[-1][1], create=False)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        fd = files.open_append(segment_path(directory, first_lsn), create=True)
        data = SEGMENT_MAGIC + data
    try:
        files.write(fd, data)
        files.fsync(fd)
    finally:
        files.close(fd)
    files.fsync_dir(directory)


def _store_trouble(data_dir: Path, log_index: LogIndex) -> str | None:
    """Why the store cannot serve as it is, if it cannot: unreadable, or missing records
    the log no longer holds. (Cheap: no scan of the store. A store ahead of the log is
    rolled back by every start: `HistoryStore.truncate_after`.)"""
    store, unreadable = open_store(data_dir)
    if unreadable is not None:
        return f"the store is unreadable ({unreadable})"
    lsn = 0 if store is None else store.lsn
    if store is not None:
        store.close()
    if lsn + 1 < log_index.first_lsn:
        return f"the store holds records up to {lsn} and the log starts at {log_index.first_lsn}"
    return None


def repair_damage(
    data_dir: Path, limits: Limits, snapshot: Snapshot | None, files: Files, *, rebuild: bool
) -> list[str]:
    """Repair what `--repair` repairs: truncate the log at damage before its tail, then
    rebuild the store if asked to (`rebuild`), or if it cannot serve as it is. The caller
    holds the data directory's lock.

    Returns:
        What was done and lost, a line each.
    """
    lines = []
    segments = list_segments(wal_dir(data_dir))
    base = 0 if snapshot is None else snapshot.lsn
    needed = _needed(segments, base)
    chat, report = recover(limits, snapshot, [(first, path.read_bytes()) for first, path in needed])
    if report.corrupt is not None:
        first, damage = report.corrupt
        lines.append(_repair(dict(needed), first, damage.offset, report, files))
    index = _log_index(data_dir, report)
    trouble = _store_trouble(data_dir, index)
    if trouble is not None:
        lines.append(f"{trouble}: rebuilding it")
    if trouble is not None or rebuild:
        lines += rebuild_store(data_dir, chat, index, files, partial(_append_log, data_dir, files))
    return lines


def repair(data_dir: Path, limits: Limits, files: Files) -> list[str]:
    """`imcore-admin verify --repair`: the log's damage truncated, and the store rebuilt
    from the log and what of it still reads back. Refused while a server runs.

    Raises:
        StartupError: a server holds the directory; it still needs its upgrade.
    """
    lock = DataDirLock(data_dir)
    try:
        snapshot = load_snapshot(snapshot_dir(data_dir))
        if snapshot is not None and snapshot.version < 3:
            raise StartupError(
                f"{data_dir} is still in format 1: start a server on it once (it upgrades "
                f"the directory), then repair"
            )
        return repair_damage(data_dir, limits, snapshot, files, rebuild=True)
    finally:
        lock.release()


def _cursor_damage(chat: Chat, conv: str) -> list[str]:
    """What is wrong with the committed cursors of `conv`: one beyond the head (no client
    can acknowledge a seq that was never committed), a delivered cursor in a group."""
    found = []
    head = chat.head(conv)
    delivered = chat.cursors.delivered_all(conv)
    for kind, cursors in (("read", chat.cursors.reads(conv)), ("delivered", delivered)):
        beyond = sorted(user for user, seq in cursors.items() if seq > head)
        if beyond:
            found.append(f"{conv}: {kind} cursor of {', '.join(beyond)} beyond head {head}")
    if delivered and ids.is_group(conv):
        found.append(f"{conv}: a group holds delivered cursors")
    return found


@dataclass(slots=True)
class Verification:
    """What `imcore-admin verify` found."""

    snapshots: list[tuple[str, str]]  # (file, "ok" or what is wrong)
    segments: int = 0
    records: int = 0
    events: int = 0
    conversations: int = 0
    torn: str | None = None  # a torn tail: recoverable, truncated at the next start
    damage: list[str] | None = None
    store: StoreCheck | None = None  # the history store's own findings (also in `damage`)

    @property
    def damaged(self) -> bool:
        return bool(self.damage)


def verify(data_dir: Path, limits: Limits) -> Verification:
    """Check every snapshot and WAL record, and the history store against both: every
    conversation's history gapless from its floor to its head, in the store or the log,
    with increasing ts, and the events both hold the same (`store_check`).

    Reads only; safe while a server runs, though what it reads may then be moving (a
    backup is the place to verify a running server's data).
    """
    damage: list[str] = []
    checked: list[tuple[str, str]] = []
    newest: Snapshot | None = None
    for _, path in reversed(list_snapshots(snapshot_dir(data_dir))):
        try:
            snapshot = decode(path.read_bytes())
        except (SnapshotError, OSError) as exc:
            checked.append((path.name, str(exc)))
            damage.append(f"snapshot {path.name}: {exc}")
            continue
        checked.append((path.name, f"ok, lsn {snapshot.lsn}"))
        newest = newest or snapshot
    result = Verification(snapshots=checked[::-1])
    segments = list_segments(wal_dir(data_dir))
    result.segments = len(segments)
    expected: int | None = None
    for i, (first, path) in enumerate(segments):
        scan = scan_segment(path.read_bytes(), first)
        result.records += len(scan.records)
        if expected is not None and first != expected:
            damage.append(f"{path.name}: expected a segment starting at lsn {expected}")
        expected = first + len(scan.records)
        if scan.damage is None:
            continue
        if isinstance(scan.damage, TornTail) and i == len(segments) - 1:
            torn = scan.damage
            result.torn = f"{path.name}: {torn.dropped} bytes after byte {torn.offset}"
        elif isinstance(scan.damage, TornTail):
            damage.append(f"{path.name} at byte {scan.damage.offset}: torn before the end")
        else:
            damage.append(f"{path.name} at byte {scan.damage.offset}: {scan.damage.reason}")
    chat, report = _recover_readonly(data_dir, limits, newest)
    if newest is None or newest.version >= 3:
        result.store = check_store(data_dir, chat, _log_index(data_dir, report))
        damage += result.store.damage
    for conv in chat.conversation_ids():
        damage += _cursor_damage(chat, conv)
    result.conversations, result.events = chat.retained()
    if report.corrupt is not None and not damage:
        damage.append(f"recovery stopped early: {report.corrupt[1].reason}")
    result.damage = damage
    return result
