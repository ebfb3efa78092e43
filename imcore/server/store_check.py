"""The history store checked against the log and snapshots, and rebuilt from them.

`imcore-admin verify` asks `check_store` what is wrong with `history.sqlite3`; a start with
`--repair` and `imcore-admin verify --repair` call `rebuild_store` to replace it. Must not:
decide what the rest of the data directory means (recovery is `datadir`'s), or write a
WAL record itself (the caller appends them: `AppendLog`).

What the store must hold, given the state recovered from the snapshot and the log (head
and floor of every conversation) and the log's own events:

- every seq from the floor to the head whose event the log holds no longer, or holds at
  or below the store's LSN (records after it are not in the store yet, and need not be);
- nothing beyond the head, and no conversation the state does not know;
- for an event the log holds too, the same event (seq, ts, sender, device, time, cmid,
  body, membership change);
- along seq, increasing ts;

and SQLite's `PRAGMA integrity_check` must pass. A store whose LSN is beyond the log's last
record holds what the log lost (a power loss under `--fsync interval`): not damage, since
every start rolls such a store back to the log (`HistoryStore.truncate_after`), so the
events beyond the heads are not reported then.

A rebuild makes a new store from the log's events and whatever the old store still reads
back (a range that fails to read is split until the bad rows are found), in a temporary
file. A seq found in neither is lost: the conversation's floor is raised above its
highest lost seq by a `FloorRecord` appended to the log, so the history a client is served
stays gapless, as retention would leave it. The old store is kept beside the new one
(`history.sqlite3.damaged-<time>`), and every loss is said exactly.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cbor2

from ..core import Event
from ..core.records import FloorRecord, event_from_row
from ..core.wal_format import WalRecord
from .store import HistoryStore, store_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    from ..core import Chat
    from .files import Files

#: The largest seq SQLite's integer holds: "to the end" in a range query.
MAX_SEQ = 2**63 - 1
#: Rows read at a time when salvaging a damaged store; a range that fails is halved.
SALVAGE_CHUNK = 1024
#: Spans, mismatches and integrity lines shown per finding before "and N more".
SHOWN = 10


@dataclass(slots=True)
class LogIndex:
    """The events the log holds, by conversation and seq, with their LSN.

    `first_lsn` is the log's first record (`last_lsn + 1` when it holds none): what the
    store must hold on its own is everything below it.
    """

    events: dict[str, dict[int, tuple[int, Event]]] = field(default_factory=dict)
    first_lsn: int = 1
    last_lsn: int = 0

    @classmethod
    def of(cls, records: Iterable[WalRecord], last_lsn: int) -> LogIndex:
        """The index of `records` (in LSN order) up to `last_lsn`, the log's last record
        (or the snapshot's LSN, when no record follows it)."""
        index = cls(last_lsn=last_lsn, first_lsn=last_lsn + 1)
        first = True
        for item in records:
            if item.lsn > last_lsn:
                break
            if first:
                index.first_lsn, first = item.lsn, False
            record = item.record
            if isinstance(record, Event):
                index.events.setdefault(record.conv, {})[record.seq] = (item.lsn, record)
        return index


def spans(seqs: list[int]) -> str:
    """Ascending seqs as `1..4, 7, 9..12`, the first `SHOWN` spans of them."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    shown = [f"{a}..{b}" if a != b else str(a) for a, b in runs[:SHOWN]]
    more = f" and {len(runs) - SHOWN} more spans" if len(runs) > SHOWN else ""
    return ", ".join(shown) + more


def _differences(stored: Event, logged: Event) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(Event)
        if getattr(stored, f.name) != getattr(logged, f.name)
    ]


def _decode(conv: str, seq: int, row: bytes) -> Event | str:
    """The stored event, or what is wrong with its row."""
    try:
        event = event_from_row(conv, cbor2.loads(row))
    except (ValueError, TypeError, cbor2.CBORError) as exc:
        return f"its row does not decode ({exc})"
    if event.seq != seq:
        return f"its row holds seq {event.seq}"
    return event


def open_store(data_dir: Path) -> tuple[HistoryStore | None, str | None]:
    """The data directory's store opened to read: (store, None); (None, None) when there
    is none; (None, why) when SQLite cannot read it."""
    path = store_path(data_dir)
    if not path.exists():
        return None, None
    try:
        return HistoryStore(path, readonly=True), None
    except sqlite3.Error as exc:
        return None, str(exc)


@dataclass(slots=True)
class StoreCheck:
    """What `check_store` found."""

    present: bool
    readable: bool = True
    lsn: int = 0
    events: int = 0
    bytes: int = 0
    damage: list[str] = field(default_factory=list)
    #: the store holds records the log lost (a power loss under `--fsync interval` or
    #: `never`): not damage, the next start rolls the store back to the log
    ahead: str | None = None


def check_store(data_dir: Path, chat: Chat, log: LogIndex) -> StoreCheck:
    """Check the store of `data_dir` against the recovered state `chat` and the log.

    Reads only (SQLite may create its empty `-wal` and `-shm` files beside the store).
    """
    store, unreadable = open_store(data_dir)
    if unreadable is not None:
        found = StoreCheck(present=True, readable=False)
        found.damage.append(f"history store: unreadable ({unreadable})")
        return found
    if store is None:
        found = StoreCheck(present=False)
        _check_all(found, None, chat, log)
        return found
    try:
        found = StoreCheck(present=True, lsn=store.lsn, bytes=store.size_bytes())
        try:
            problems = store.integrity_check(SHOWN)
        except sqlite3.Error as exc:
            problems = [f"the check itself failed ({exc})"]
        if problems != ["ok"]:
            found.damage += [f"history store: {line}" for line in problems]
        try:
            found.events = sum(n for _, _, n in store.ranges().values())
        except sqlite3.Error as exc:
            found.damage.append(f"history store: cannot count its events ({exc})")
        _check_all(found, store, chat, log)
        return found
    finally:
        store.close()


def _check_all(found: StoreCheck, store: HistoryStore | None, chat: Chat, log: LogIndex) -> None:
    damage, lsn = found.damage, found.lsn
    ahead = lsn > log.last_lsn
    if ahead:
        found.ahead = (
            f"records {log.last_lsn + 1}..{lsn} are in the store but no longer in the log; "
            f"the next start deletes them from the store"
        )
    if lsn + 1 < log.first_lsn:
        damage.append(
            f"history store: holds records up to lsn {lsn} and the log starts at "
            f"{log.first_lsn}: records {lsn + 1}..{log.first_lsn - 1} are in neither"
        )
    known = set(chat.conversation_ids())
    if store is not None and not ahead:
        for conv in sorted(set(store.names()) - known):
            stray = sum(1 for _ in _rows(store, conv, 0, MAX_SEQ, damage))
            if stray:
                damage.append(
                    f"{conv}: the store holds {stray} events of a conversation the "
                    f"snapshots and log do not know"
                )
    for conv in sorted(known):
        damage += _check_conversation(
            store, conv, chat.floor(conv), chat.head(conv), log.events.get(conv, {}), lsn, ahead
        )


def _rows(
    store: HistoryStore | None, conv: str, low: int, high: int, damage: list[str]
) -> Iterator[tuple[int, bytes]]:
    """The stored rows, ending with a line in `damage` where SQLite stops reading."""
    if store is None:
        return
    last = low - 1
    try:
        for seq, row in store.raw_rows(conv, low, high):
            last = seq
            yield seq, row
    except sqlite3.Error as exc:
        damage.append(f"{conv}: the store cannot be read after seq {last} ({exc})")


def _check_conversation(
    store: HistoryStore | None,
    conv: str,
    floor: int,
    head: int,
    logged: dict[int, tuple[int, Event]],
    store_lsn: int,
    ahead: bool,
) -> list[str]:
    damage: list[str] = []
    rows = _rows(store, conv, floor, MAX_SEQ, damage)
    pending = next(rows, None)
    absent: list[int] = []  # should be stored, and the log still has them
    lost: list[int] = []  # in neither
    undecodable: list[str] = []
    differ: list[str] = []
    ts_broken: int | None = None
    previous_ts = 0
    for seq in range(floor, head + 1):
        stored: Event | None = None
        if pending is not None and pending[0] == seq:
            decoded = _decode(conv, seq, pending[1])
            if isinstance(decoded, str):
                undecodable.append(f"seq {seq}: {decoded}")
            else:
                stored = decoded
            pending = next(rows, None)
        entry = logged.get(seq)
        if stored is None:
            if entry is None:
                lost.append(seq)
            elif entry[0] <= store_lsn:
                absent.append(seq)
        elif entry is not None:
            fields = _differences(stored, entry[1])
            if fields:
                differ.append(f"seq {seq} ({', '.join(fields)})")
        event = stored if stored is not None else (entry[1] if entry is not None else None)
        if event is not None:
            if event.ts <= previous_ts and ts_broken is None:
                ts_broken = seq
            previous_ts = event.ts
    beyond = [seq for seq, _ in ([pending] if pending else [])] + [seq for seq, _ in rows]
    if absent:
        damage.append(f"{conv}: the store lacks seqs {spans(absent)} (the log still has them)")
    if lost:
        damage.append(f"{conv}: seqs {spans(lost)} are in neither the store nor the log")
    if beyond and not ahead:
        damage.append(f"{conv}: the store holds seqs {spans(beyond)} beyond head {head}")
    for what, items in (("do not decode", undecodable), ("differ from the log", differ)):
        if items:
            more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
            damage.append(f"{conv}: stored events that {what}: {'; '.join(items[:SHOWN])}{more}")
    if ts_broken is not None:
        damage.append(f"{conv}: ts does not increase along seq at seq {ts_broken}")
    return damage


# --- rebuild -------------------------------------------------------------------------------------


def _salvage(
    store: HistoryStore | None, conv: str, low: int, high: int
) -> Iterator[tuple[int, bytes]]:
    """The rows of `low..high` that SQLite reads back, a chunk at a time; a chunk that
    fails is halved until the rows that fail are alone (and skipped)."""
    if store is None:
        return
    todo = [(a, min(a + SALVAGE_CHUNK - 1, high)) for a in range(low, high + 1, SALVAGE_CHUNK)]
    todo.reverse()
    while todo:
        a, b = todo.pop()
        try:
            rows = list(store.raw_rows(conv, a, b))
        except sqlite3.Error:
            if a < b:
                middle = (a + b) // 2
                todo += [(middle + 1, b), (a, middle)]
            continue
        yield from rows


@dataclass(slots=True)
class _Recovered:
    """One conversation's outcome of a rebuild."""

    kept: int = 0
    lost: list[int] = field(default_factory=list)


def _events_of(
    store: HistoryStore | None,
    conv: str,
    floor: int,
    head: int,
    logged: dict[int, tuple[int, Event]],
    outcome: _Recovered,
) -> Iterator[Event]:
    """The events `floor..head` of `conv`: the log's, else the old store's (when its row
    decodes to that seq with a ts above the previous one); the rest in `outcome.lost`."""
    rows = _salvage(store, conv, floor, head)
    pending = next(rows, None)
    previous_ts = 0
    for seq in range(floor, head + 1):
        while pending is not None and pending[0] < seq:
            pending = next(rows, None)
        event: Event | None = None
        entry = logged.get(seq)
        if entry is not None:
            event = entry[1]
        elif pending is not None and pending[0] == seq:
            decoded = _decode(conv, seq, pending[1])
            if isinstance(decoded, Event) and decoded.ts > previous_ts:
                event = decoded
        if event is None:
            outcome.lost.append(seq)
            continue
        previous_ts = event.ts
        outcome.kept += 1
        yield event


def _dropped(store: HistoryStore | None, chat: Chat, known: set[str]) -> list[str]:
    """What the old store held that the state does not: events beyond a head, and
    conversations it does not know."""
    if store is None:
        return []
    lines = []
    for conv in store.names():
        low, high = (chat.head(conv) + 1, MAX_SEQ) if conv in known else (0, MAX_SEQ)
        seqs = [seq for seq, _ in _salvage_all(store, conv, low, high)]
        if not seqs:
            continue
        if conv in known:
            lines.append(
                f"{conv}: stored seqs {spans(seqs)} dropped: beyond head {chat.head(conv)}, "
                f"and the log does not hold them"
            )
        else:
            lines.append(
                f"{conv}: {len(seqs)} stored events dropped: the snapshots and log do not "
                f"know the conversation"
            )
    return lines


def _salvage_all(
    store: HistoryStore, conv: str, low: int, high: int
) -> Iterator[tuple[int, bytes]]:
    """The readable rows from `low` on, however high (`_salvage` wants a bounded range)."""
    try:
        yield from store.raw_rows(conv, low, high)
    except sqlite3.Error:
        return


def rebuild_store(
    data_dir: Path,
    chat: Chat,
    log: LogIndex,
    files: Files,
    append_log: Callable[[int, list[FloorRecord]], None],
) -> list[str]:
    """Replace the store of `data_dir` with one rebuilt from the log and what the old one
    still reads back. The caller holds the data directory's lock.

    Args:
        chat: the state recovered from the snapshot and the log (heads and floors).
        log: the log's events; its `last_lsn` is the log's last record.
        files: the file layer.
        append_log: appends floor moves to the log from the given LSN on, durably; called
            before the new store takes the old one's place, so the store is never ahead.

    Returns:
        What was done and lost, a line each.
    """
    path = store_path(data_dir)
    old, unreadable = open_store(data_dir)
    lines: list[str] = []
    if unreadable is not None:
        lines.append(f"the old store is unreadable ({unreadable}): rebuilding from the log alone")
    temp = path.with_name(path.name + ".rebuild")
    for leftover in (temp, *_companions(temp)):
        if leftover.exists():
            files.remove(leftover)
    new = HistoryStore(temp)
    try:
        known = set(chat.conversation_ids())
        outcomes = {conv: _Recovered() for conv in sorted(known)}

        def events() -> Iterator[Event]:
            for conv, outcome in outcomes.items():
                logged = log.events.get(conv, {})
                yield from _events_of(old, conv, chat.floor(conv), chat.head(conv), logged, outcome)

        new.write_events(events(), log.last_lsn)
        moves = []
        for conv, outcome in outcomes.items():
            if not outcome.lost:
                continue
            floor, raised = chat.floor(conv), outcome.lost[-1] + 1
            lines.append(
                f"{conv}: seqs {spans(outcome.lost)} lost: in neither the log nor the "
                f"readable part of the old store"
            )
            given_up = raised - floor - len(outcome.lost)
            outcome.kept -= given_up
            served = f": {given_up} readable events below it are no longer served"
            lines.append(
                f"{conv}: floor raised from {floor} to {raised}, so that its history is "
                f"gapless{served if given_up else ''}"
            )
            moves.append(FloorRecord(conv, raised))
        lines += _dropped(old, chat, known)
        first = log.last_lsn + 1
        new.write(WalRecord(first + i, move) for i, move in enumerate(moves))
        new.sync()
        kept = sum(o.kept for o in outcomes.values())
    finally:
        new.close()
        if old is not None:
            old.close()
    _fsync_file(temp)
    if moves:
        append_log(first, moves)
    aside = _swap_in(path, temp, files)
    where = f"; the old store is kept as {aside.name}" if aside is not None else ""
    lines.append(
        f"history store rebuilt: {kept} events up to lsn {log.last_lsn + len(moves)}{where}"
    )
    return lines


def _companions(path: Path) -> list[Path]:
    """SQLite's WAL and shared-memory files of the database `path`."""
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(path: Path, temp: Path, files: Files) -> Path | None:
    """Put the rebuilt store `temp` in place of `path`, keeping the old one (and its WAL,
    which holds its newest transactions) aside. Returns where the old one went.

    A crash at any point leaves either the old store (with or without its WAL: either is
    consistent up to its LSN) or the new one at `path`.
    """
    aside = None
    if path.exists():
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        os.link(path, aside)
        wal, shm = _companions(path)
        if wal.exists():
            files.replace(wal, aside.with_name(aside.name + "-wal"))
        if shm.exists():
            files.remove(shm)  # an index of the WAL moved away: SQLite rebuilds it
    for leftover in _companions(temp):
        if leftover.exists():
            files.remove(leftover)
    files.replace(temp, path)
    files.fsync_dir(path.parent)
    return aside
