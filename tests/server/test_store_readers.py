"""The history store beside its readers: a reader's long snapshot (a backup's) must not make
`sync` claim what it could not make durable, and a read-only store changes nothing."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import pytest

from imcore.core import Event
from imcore.core.wal_format import WalRecord
from imcore.server.store import HistoryStore

if TYPE_CHECKING:
    from pathlib import Path

DM = "dm:alice:bob"


def event(seq: int) -> WalRecord:
    return WalRecord(seq, Event(conv=DM, seq=seq, ts=seq, sender="alice", dev="d", at=0, body=seq))


@pytest.mark.timeout(60)
def test_a_sync_held_up_by_a_reader_does_not_advance_durable_lsn(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    store.write([event(1)])
    assert store.sync() == 1
    reader = sqlite3.connect(store.path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)  # its snapshot
    store.write([event(2)])
    # The checkpoint cannot copy record 2's frames past the reader's snapshot (SQLite
    # waits its busy timeout for the reader, then gives up): 2 may not be on disk.
    assert store.sync() == 1
    assert store.durable_lsn == 1
    reader.execute("COMMIT")
    reader.close()
    assert store.sync() == 2
    assert store.durable_lsn == 2
    store.close()


def test_a_read_only_store_is_neither_created_nor_written(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with pytest.raises(sqlite3.OperationalError):
        HistoryStore(path, readonly=True)
    assert not path.exists()
    HistoryStore(path).close()
    store = HistoryStore(path, readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.write([event(1)])
    assert (store.lsn, store.integrity_check()) == (0, ["ok"])
    store.close()
