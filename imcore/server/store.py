"""The history store: every committed event, in SQLite (`<data-dir>/history.sqlite3`).

Why SQLite rather than LMDB, and the measurements: docs/architecture.md ("History store").

    meta(key, value)                       "lsn": the last log record the store holds
    convs(id, name)                        a conversation's integer id (keys stay small)
    events(conv, seq, sender, cmid, row)   one per event, keyed (conv, seq), WITHOUT ROWID;
                                           `row` is the CBOR of `records.event_to_row`
    events_cmid(conv, sender, cmid)        the dedup lookup (`FindCmid`)

The WAL stays the commit point: an ack never waits on this file. The checkpoint
(`checkpoint.Checkpoint`) writes committed records here in batches, one transaction each,
with the LSN of the batch's last record in the same transaction, so after any crash the
store is whole up to its `lsn` and recovery feeds it the log after that. The store runs
with `synchronous=NORMAL`: a power loss may take its last transactions (never its
consistency). What is certainly on disk is what `sync` (a SQLite checkpoint, which fsyncs)
covered: `durable_lsn`, below which the log may be deleted.

One writer (the checkpoint's worker thread) and any number of readers (cold `sync` pages,
dedup lookups, the admin views), each reader thread with its own connection: SQLite's WAL
mode lets them read while the writer writes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import TYPE_CHECKING

import cbor2

from ..core import Event
from ..core.history import FindCmid, ReadPage
from ..core.records import FloorRecord, event_from_row, event_to_row

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from ..core.history import StoreAnswer, StoreQuery
    from ..core.wal_format import WalRecord

log = logging.getLogger("imcore.store")

STORE_FILE = "history.sqlite3"
#: SQLite's page cache per connection. The checkpoint's batches land all over the tree
#: (every conversation); with the default 2 MiB the write rate halved between 200,000 and
#: 1,000,000 events (tools/bench_store.py).
WRITER_CACHE_KIB = 64 * 1024
READER_CACHE_KIB = 8 * 1024

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS convs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS events (conv INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " sender TEXT NOT NULL, cmid TEXT, row BLOB NOT NULL,"
    " PRIMARY KEY (conv, seq)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS events_cmid ON events (conv, sender, cmid) WHERE cmid IS NOT NULL",
)


def store_path(data_dir: Path) -> Path:
    return data_dir / STORE_FILE


def store_files(data_dir: Path) -> list[Path]:
    """The store's files that exist: the database, and SQLite's WAL and shared memory."""
    path = store_path(data_dir)
    names = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return [p for p in names if p.exists()]


def _connect(path: Path, cache_kib: int, readonly: bool = False) -> sqlite3.Connection:
    # isolation_level=None: transactions are the checkpoint's own (BEGIN ... COMMIT).
    if readonly:
        # mode=ro: a missing file is an error rather than a new, empty store.
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        db.execute(f"PRAGMA cache_size=-{cache_kib}")
        return db
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA cache_size=-{cache_kib}")
    return db


class HistoryStore:
    """The store of one data directory.

    Args:
        path: the database file (created if missing, unless `readonly`).
        readonly: only read it (`verify`, `inspect`, `backup`, beside a running server or
            not): no schema is created and no write is possible.

    Raises:
        sqlite3.Error: the file is not a store (`readonly`: or it is missing).
    """

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db = _connect(path, WRITER_CACHE_KIB, readonly)
        if not readonly:
            for statement in _SCHEMA:
                self._db.execute(statement)
        found = self._db.execute("SELECT value FROM meta WHERE key = 'lsn'").fetchone()
        self.lsn: int = 0 if found is None else int(found[0])
        self.durable_lsn = self.lsn  # at open, whatever the file holds is on disk
        self._ids: dict[str, int] = dict(self._db.execute("SELECT name, id FROM convs"))
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # --- the writer (the checkpoint's thread) --------------------------------------------------

    def _conv_id(self, conv: str) -> int:
        found = self._ids.get(conv)
        if found is None:
            cursor = self._db.execute("INSERT INTO convs (name) VALUES (?)", (conv,))
            found = self._ids[conv] = int(cursor.lastrowid or 0)
        return found

    def write(self, records: Iterable[WalRecord]) -> int:
        """Take in committed records (events, floor moves; cursors are the snapshot's), in
        one transaction that also moves `lsn`. Records at or below `lsn` are skipped, so
        feeding the same log twice changes nothing. Returns the new `lsn`."""
        db = self._db
        rows = []
        last = self.lsn
        db.execute("BEGIN")
        try:
            for item in records:
                if item.lsn <= last:
                    continue
                last = item.lsn
                record = item.record
                if isinstance(record, Event):
                    conv = self._conv_id(record.conv)
                    row = cbor2.dumps(event_to_row(record))
                    rows.append((conv, record.seq, record.sender, record.cmid, row))
                elif isinstance(record, FloorRecord):
                    self._flush(rows)
                    conv = self._conv_id(record.conv)
                    db.execute(
                        "DELETE FROM events WHERE conv = ? AND seq < ?", (conv, record.floor)
                    )
            self._flush(rows)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('lsn', ?)", (last,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._ids = dict(db.execute("SELECT name, id FROM convs"))
            raise
        self.lsn = last
        return last

    def _flush(self, rows: list[tuple[int, int, str, str | None, bytes]]) -> None:
        # OR IGNORE: an event already there (a log replayed over an upgrade) stays.
        self._db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?)", rows)
        rows.clear()

    def write_events(self, events: Iterable[Event], lsn: int, batch: int = 50_000) -> None:
        """Bulk load (an upgrade, the benchmark's builder): `events`, then `lsn`."""
        chunk: list[tuple[int, int, str, str | None, bytes]] = []
        db = self._db
        db.execute("BEGIN")
        try:
            for e in events:
                row = cbor2.dumps(event_to_row(e))
                chunk.append((self._conv_id(e.conv), e.seq, e.sender, e.cmid, row))
                if len(chunk) >= batch:
                    self._flush(chunk)
            self._flush(chunk)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('lsn', ?)", (max(lsn, self.lsn),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.lsn = max(lsn, self.lsn)

    def truncate_after(self, heads: dict[str, int], lsn: int) -> int:
        """Forget what the log no longer has: events above each conversation's `heads`
        (0 for one not there), and `lsn` as the store's. After a power loss under
        `--fsync interval` or `never`, the store may hold records the log lost; their seqs
        will be given to other events. Returns the events deleted."""
        db = self._db
        deleted = 0
        db.execute("BEGIN")
        try:
            for conv, conv_id in self._ids.items():
                cursor = db.execute(
                    "DELETE FROM events WHERE conv = ? AND seq > ?", (conv_id, heads.get(conv, 0))
                )
                deleted += cursor.rowcount
            db.execute("INSERT OR REPLACE INTO meta VALUES ('lsn', ?)", (lsn,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.lsn = self.durable_lsn = lsn
        return deleted

    def sync(self) -> int:
        """Make everything written durable (a SQLite checkpoint: WAL fsynced, copied into
        the database, database fsynced). Returns `durable_lsn`."""
        lsn = self.lsn
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            # A reader's snapshot (a long read: `backup`) kept the checkpoint from copying
            # every frame, and SQLite fsyncs its WAL only when it copies some: the newest
            # transactions may not be on disk. The log stays until a later sync.
            fields = {"lsn": lsn, "durable_lsn": self.durable_lsn}
            log.warning("store sync held up by a reader", extra={"fields": fields})
            return self.durable_lsn
        self.durable_lsn = lsn
        return lsn

    # --- readers (any thread) -------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = _connect(self.path, READER_CACHE_KIB, self.readonly)
            with self._readers_lock:
                self._readers.append(db)
        return db

    def answer(self, query: StoreQuery) -> StoreAnswer:
        """Carry out a query of the core (`history`)."""
        if isinstance(query, ReadPage):
            return self.read_page(query.conv, query.low, query.high)
        assert isinstance(query, FindCmid)
        return self.find_cmid(query.conv, query.sender, query.cmid)

    def read_page(self, conv: str, low: int, high: int) -> list[Event]:
        """The stored events `low..high` of `conv`, ascending."""
        conv_id = self._ids.get(conv)
        if conv_id is None or high < low:
            return []
        rows = self._reader().execute(
            "SELECT row FROM events WHERE conv = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (conv_id, low, high),
        )
        return [event_from_row(conv, cbor2.loads(row)) for (row,) in rows]

    def find_cmid(self, conv: str, sender: str, cmid: str) -> tuple[int, int] | None:
        """(seq, ts) of the stored event of `conv` that `sender` sent as `cmid`."""
        conv_id = self._ids.get(conv)
        if conv_id is None:
            return None
        found = (
            self._reader()
            .execute(
                # The planner prefers the primary key's conv prefix, a scan of the whole
                # conversation (100 ms in a 1M-event group); the index takes 0.2 ms.
                "SELECT row FROM events INDEXED BY events_cmid"
                " WHERE conv = ? AND sender = ? AND cmid = ?",
                (conv_id, sender, cmid),
            )
            .fetchone()
        )
        if found is None:
            return None
        event = event_from_row(conv, cbor2.loads(found[0]))
        return event.seq, event.ts

    def scan(self, conv: str, low: int = 0) -> Iterator[Event]:
        """Every stored event of `conv` from seq `low` on, ascending (retention by age,
        verify, inspect)."""
        conv_id = self._ids.get(conv)
        if conv_id is None:
            return
        rows = self._reader().execute(
            "SELECT row FROM events WHERE conv = ? AND seq >= ? ORDER BY seq", (conv_id, low)
        )
        for (row,) in rows:
            yield event_from_row(conv, cbor2.loads(row))

    def ranges(self) -> dict[str, tuple[int, int, int]]:
        """conv -> (lowest seq, highest seq, events) of every stored conversation."""
        names = {v: k for k, v in self._ids.items()}
        rows = self._reader().execute(
            "SELECT conv, min(seq), max(seq), count(*) FROM events GROUP BY conv"
        )
        return {names[c]: (lo, hi, n) for c, lo, hi, n in rows if c in names}

    def names(self) -> list[str]:
        """Every conversation the store has an id for (as of opening, for a reader)."""
        return sorted(self._ids)

    def raw_rows(self, conv: str, low: int, high: int) -> Iterator[tuple[int, bytes]]:
        """(seq, row bytes) of the stored events `low..high` of `conv`, ascending and not
        decoded: `verify` and its repair decide what a row that does not decode means."""
        conv_id = self._ids.get(conv)
        if conv_id is None or high < low:
            return
        rows = self._reader().execute(
            "SELECT seq, row FROM events WHERE conv = ? AND seq BETWEEN ? AND ? ORDER BY seq",
            (conv_id, low, high),
        )
        for seq, row in rows:
            yield int(seq), bytes(row)

    def integrity_check(self, limit: int = 100) -> list[str]:
        """SQLite's own check of the file (`PRAGMA integrity_check`): ["ok"], or up to
        `limit` lines naming what is wrong."""
        found = self._reader().execute(f"PRAGMA integrity_check({int(limit)})")
        return [str(line) for (line,) in found]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in store_files(self.path.parent))

    def backup(self, to: Path) -> int:
        """A consistent copy of the store at `to` (SQLite's online backup), taken while the
        writer goes on. Returns the `lsn` the copy holds."""
        target = sqlite3.connect(to)
        try:
            self._reader().backup(target)
            found = target.execute("SELECT value FROM meta WHERE key = 'lsn'").fetchone()
        finally:
            target.close()
        return 0 if found is None else int(found[0])

    def close(self) -> None:
        with self._readers_lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
        self._db.close()
