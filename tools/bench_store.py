"""The two candidate history stores of issue 16, SQLite and LMDB, measured on imcore's
workload (figures for docs/benchmarks.md; never run as a test).

    python tools/bench_store.py [--events 1000000] [--convs 10000] [--batch 5000]
                                [--pages 2000] [--lookups 20000] [--dir DIR] [--cpu 0]

Both stores get the same events, in the same order, as a checkpoint thread would hand them
over: committed events in LSN order (interleaved across conversations), `--batch` per write
transaction. One group conversation takes 10% of the events (the retention delete runs on
it); the rest spread over `--convs` - 1 direct conversations, bodies of about 48 bytes of
JSON as in the restart benchmark. An event's value is its CBOR row
(`imcore.core.records.event_to_row`, without the conversation, which the key holds); the
conversation is an integer id (a store would map `dm:a:b` / `g:name` to it in a small
table), so both keys are (uint32 conv, uint64 seq).

- SQLite: `events(conv INTEGER, seq INTEGER, sender TEXT, cmid TEXT, row BLOB,
  PRIMARY KEY (conv, seq)) WITHOUT ROWID`, an index on (conv, sender, cmid) for dedup, WAL
  journal, synchronous=NORMAL (imcore's own WAL is the commit point; the store is a
  checkpoint target: a crash may lose the last transactions, never its consistency), a
  64 MiB page cache.
- LMDB: one key per event, `>IQ` (conv, seq); a second named database maps
  conv + sender + NUL + cmid to the seq; writemap, metasync off (the same promise as above:
  consistent after a crash, the last transactions possibly gone), a sparse map of
  1 KiB/event (at least 1 GiB).

Each phase: the bulk write (events/s, CPU s); cold `sync` pages (the store reopened and its
files dropped from the page cache with posix_fadvise(DONTNEED), then `--pages` reads of
100 events from a random seq of a random conversation); lookups by the dedup key; bytes
on disk per event against the issue's budget (2x body bytes + 100 B/event); an online
backup (SQLite's backup API, LMDB's compacting copy); the delete of the oldest 10% of the
big conversation. The process pins itself to `--cpu` (as `taskset -c`).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cbor2
import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imcore.core.records import event_to_row
from tools.benchlib import message_event, percentile, print_table

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

BIG_CONV = 0  # the group that takes BIG_SHARE of all events
BIG_SHARE = 0.10
BIG_MEMBERS = 200
PAGE = 100  # events per `sync` page (the protocol's default limit)
SQLITE_CACHE_KIB = 64 * 1024
SEED = 16  # the number: the same events every run


@dataclass(frozen=True, slots=True)
class Item:
    """One committed event as a checkpoint hands it to the store."""

    conv: int
    seq: int
    sender: str
    cmid: str
    row: bytes  # cbor2.dumps(event_to_row(event))


def make_events(events: int, convs: int) -> tuple[list[Item], dict[int, int], int]:
    """`events` items in commit order, the head of each conversation, and the body bytes."""
    rng = random.Random(SEED)
    heads = dict.fromkeys(range(convs), 0)
    items: list[Item] = []
    body_bytes = 0
    for ts in range(1, events + 1):
        c = BIG_CONV if rng.random() < BIG_SHARE else rng.randrange(1, convs)
        seq = heads[c] = heads[c] + 1
        if c == BIG_CONV:
            name, sender = "g:big", f"m{rng.randrange(BIG_MEMBERS)}"
        else:
            name, sender = f"dm:u{2 * c}:u{2 * c + 1}", f"u{2 * c + seq % 2}"
        event, size = message_event(name, seq, ts, sender)
        body_bytes += size
        items.append(Item(c, seq, sender, event.cmid or "", cbor2.dumps(event_to_row(event))))
    return items, heads, body_bytes


class Store(Protocol):
    name: str

    def write(self, batch: Sequence[Item]) -> None: ...
    def page(self, conv: int, seq: int) -> list[bytes]: ...
    def lookup(self, conv: int, sender: str, cmid: str) -> int | None: ...
    def delete_through(self, conv: int, seq: int) -> int: ...
    def backup(self, to: Path) -> None: ...
    def files(self) -> list[Path]: ...
    def close(self) -> None: ...


class SqliteStore:
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "history.sqlite3"
        # isolation_level=None: transactions are ours (BEGIN/COMMIT), as a checkpoint's.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        # 64 MiB of page cache instead of the default 2 MiB: the checkpoint's batches land
        # all over the tree (every conversation), and with 2 MiB the write rate halved
        # between 200,000 and 1,000,000 events. LMDB's cache is the OS's page cache.
        self.db.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS events (conv INTEGER NOT NULL, seq INTEGER NOT NULL,"
            " sender TEXT NOT NULL, cmid TEXT, row BLOB NOT NULL,"
            " PRIMARY KEY (conv, seq)) WITHOUT ROWID"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS events_cmid ON events (conv, sender, cmid)")

    def write(self, batch: Sequence[Item]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            [(i.conv, i.seq, i.sender, i.cmid, i.row) for i in batch],
        )
        self.db.execute("COMMIT")

    def page(self, conv: int, seq: int) -> list[bytes]:
        rows = self.db.execute(
            "SELECT row FROM events WHERE conv = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (conv, seq, PAGE),
        ).fetchall()
        return [r[0] for r in rows]

    def lookup(self, conv: int, sender: str, cmid: str) -> int | None:
        found = self.db.execute(
            "SELECT seq FROM events WHERE conv = ? AND sender = ? AND cmid = ?",
            (conv, sender, cmid),
        ).fetchone()
        return None if found is None else int(found[0])

    def delete_through(self, conv: int, seq: int) -> int:
        self.db.execute("BEGIN")
        n = self.db.execute("DELETE FROM events WHERE conv = ? AND seq <= ?", (conv, seq)).rowcount
        self.db.execute("COMMIT")
        return n

    def backup(self, to: Path) -> None:
        target = sqlite3.connect(to / "history.sqlite3")
        with target:
            self.db.backup(target)
        target.close()

    def files(self) -> list[Path]:
        names = [self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")]
        return [p for p in names if p.exists()]

    def close(self) -> None:
        self.db.close()


def _key(conv: int, seq: int) -> bytes:
    return struct.pack(">IQ", conv, seq)


def _dedup_key(conv: int, sender: str, cmid: str) -> bytes:
    return struct.pack(">I", conv) + sender.encode() + b"\0" + cmid.encode()


class LmdbStore:
    name = "lmdb"

    def __init__(self, directory: Path, map_size: int) -> None:
        self.directory = directory
        self.env = lmdb.open(
            str(directory),
            map_size=map_size,
            max_dbs=2,
            writemap=True,
            metasync=False,
            readahead=False,  # random page reads; readahead would fill the cache with neighbours
        )
        self.events = self.env.open_db(b"events")
        self.dedup = self.env.open_db(b"dedup")

    def write(self, batch: Sequence[Item]) -> None:
        with self.env.begin(write=True) as txn:
            for i in batch:
                txn.put(_key(i.conv, i.seq), i.row, db=self.events)
                txn.put(
                    _dedup_key(i.conv, i.sender, i.cmid), struct.pack(">Q", i.seq), db=self.dedup
                )

    def page(self, conv: int, seq: int) -> list[bytes]:
        rows: list[bytes] = []
        prefix = struct.pack(">I", conv)
        with self.env.begin(db=self.events) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_key(conv, seq)):
                return rows
            for key, value in cursor:
                if not key.startswith(prefix) or len(rows) == PAGE:
                    break
                rows.append(value)
        return rows

    def lookup(self, conv: int, sender: str, cmid: str) -> int | None:
        with self.env.begin() as txn:
            found = txn.get(_dedup_key(conv, sender, cmid), db=self.dedup)
        return None if found is None else int(struct.unpack(">Q", found)[0])

    def delete_through(self, conv: int, seq: int) -> int:
        """The events through `seq` and their dedup keys, which only the row names."""
        n = 0
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor(db=self.events)
            if not cursor.set_range(_key(conv, 0)):
                return 0
            while True:
                found_conv, found_seq = struct.unpack(">IQ", cursor.key())
                if found_conv != conv or found_seq > seq:
                    break
                row = cbor2.loads(cursor.value())
                txn.delete(_dedup_key(conv, row[2], row[5]), db=self.dedup)
                n += 1
                if not cursor.delete():  # moves to the next key; False at the end
                    break
        return n

    def backup(self, to: Path) -> None:
        self.env.copy(str(to), compact=True)

    def files(self) -> list[Path]:
        return [p for p in self.directory.iterdir() if p.is_file()]

    def close(self) -> None:
        self.env.close()


def drop_cache(files: list[Path]) -> None:
    """Flush, then ask the kernel to drop these files' pages (a no-op where unsupported)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_bytes(files: list[Path]) -> int:
    """Allocated bytes (LMDB's map file is sparse: its length is the map size)."""
    return sum(p.stat().st_blocks * 512 for p in files)


def batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def measure(
    name: str,
    directory: Path,
    items: list[Item],
    heads: dict[int, int],
    body_bytes: int,
    args: argparse.Namespace,
) -> dict[str, float]:
    directory.mkdir(parents=True)
    map_size = max(1 << 30, len(items) * 1024)

    def open_store() -> Store:
        if name == "sqlite":
            return SqliteStore(directory)
        return LmdbStore(directory, map_size)

    figures: dict[str, float] = {}
    store = open_store()
    wall = cpu = 0.0
    for batch in batches(items, args.batch):
        w0, c0 = time.perf_counter(), time.process_time()
        store.write(batch)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
    figures["write events/s"] = len(items) / wall
    figures["write wall s"] = wall
    figures["write CPU s"] = cpu
    store.close()

    # Cold pages: a fresh process's view (reopened), the files out of the page cache.
    drop_cache([p for p in directory.iterdir() if p.is_file()])
    store = open_store()
    rng = random.Random(SEED + 1)
    convs = [c for c, head in heads.items() if head > 0]
    page_ms: list[float] = []
    for _ in range(args.pages):
        conv = rng.choice(convs)
        start = rng.randint(1, max(1, heads[conv] - PAGE + 1))
        start_ns = time.perf_counter_ns()
        rows = store.page(conv, start)
        page_ms.append((time.perf_counter_ns() - start_ns) / 1e6)
        assert rows, (conv, start)
    figures["cold page p50 ms"] = percentile(page_ms, 50)
    figures["cold page p99 ms"] = percentile(page_ms, 99)

    lookup_us: list[float] = []
    for item in rng.sample(items, min(args.lookups, len(items))):
        start_ns = time.perf_counter_ns()
        seq = store.lookup(item.conv, item.sender, item.cmid)
        lookup_us.append((time.perf_counter_ns() - start_ns) / 1e3)
        assert seq == item.seq, (item, seq)
    figures["dedup lookup p50 us"] = percentile(lookup_us, 50)
    figures["dedup lookup p99 us"] = percentile(lookup_us, 99)

    on_disk = disk_bytes(store.files())
    figures["disk B/event"] = on_disk / len(items)
    figures["budget B/event"] = (2 * body_bytes + 100 * len(items)) / len(items)
    figures["disk / budget %"] = 100 * on_disk / (2 * body_bytes + 100 * len(items))

    copy = directory.parent / f"{name}-backup"
    copy.mkdir()
    t0 = time.perf_counter()
    store.backup(copy)
    figures["backup s"] = time.perf_counter() - t0
    figures["backup B/event"] = disk_bytes(list(copy.iterdir())) / len(items)
    shutil.rmtree(copy)

    through = heads[BIG_CONV] // 10
    t0 = time.perf_counter()
    deleted = store.delete_through(BIG_CONV, through)
    figures["retention delete ms"] = (time.perf_counter() - t0) * 1e3
    figures["retention deleted"] = deleted
    assert deleted == through, (deleted, through)
    store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--convs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=5_000, help="events per write transaction")
    parser.add_argument("--pages", type=int, default=2_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (a temp dir)")
    parser.add_argument("--cpu", type=int, default=0, help="pin to this CPU; -1: do not pin")
    args = parser.parse_args()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})

    t0 = time.perf_counter()
    items, heads, body_bytes = make_events(args.events, args.convs)
    print(
        f"{len(items):,} events in {sum(1 for h in heads.values() if h):,} conversations"
        f" (the big one: {heads[BIG_CONV]:,}), bodies {body_bytes / len(items):.1f} B/event,"
        f" rows {sum(len(i.row) for i in items) / len(items):.1f} B/event;"
        f" built in {time.perf_counter() - t0:.1f} s; sqlite {sqlite3.sqlite_version},"
        f" py-lmdb {lmdb.__version__} (LMDB {'.'.join(map(str, lmdb.version()))})"
    )
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as tmp:
        for name in ("sqlite", "lmdb"):
            results[name] = measure(name, Path(tmp) / name, items, heads, body_bytes, args)
            print(f"\n{name}")
            print_table([{"metric": k, name: v} for k, v in results[name].items()])
    print("\nside by side (ratio: sqlite / lmdb)")
    rows: list[dict[str, Any]] = []
    for metric, value in results["sqlite"].items():
        other = results["lmdb"][metric]
        rows.append(
            {
                "metric": metric,
                "sqlite": value,
                "lmdb": other,
                "ratio": value / other if other else float("nan"),
            }
        )
    print_table(rows)


if __name__ == "__main__":
    main()
