"""The checkpoint: committed records into the history store, off the ack path.

The committer hands over each batch it made durable (`committed`); this task writes what
has accumulated to the store in a worker thread, a transaction of at most `batch` records
at a time, then tells the core (`Chat.stored`) so the hot tails may let those events go.
An ack never waits for any of it: the WAL is the commit point, and the records wait for
the store in the log (and in the tails) however far the store falls behind.

If a store write fails, nothing is lost (the log holds every record), but the store stops
advancing: the tails stop shrinking and the log is no longer trimmed. The failure is logged
and the write retried after a pause.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import trio

from ..core.wal_format import WalRecord
from .files import run_blocking

if TYPE_CHECKING:
    from ..core import Chat, Record
    from .files import Files
    from .store import HistoryStore

log = logging.getLogger("imcore.checkpoint")

BATCH = 20000
#: How long records gather before a write, unless `BATCH` of them come first. Every store
#: transaction rewrites each B-tree page it touches (and the interior pages above them)
#: into SQLite's WAL, and the events of one commit batch fall in as many conversations as
#: they are events: written a commit batch at a time, the store wrote 7-90 KB to disk per
#: message, and every ack waits on an fsync of the same disk. Measured (docs/benchmarks.md):
#: 0.25 s / 2,000 wrote 45-53 MB/s at 9,000 sends/s, 1 s / 5,000 28-30, 2 s / 20,000 8-9.
GATHER_S = 2.0
RETRY_S = 1.0


class Checkpoint:
    """Brings the store up to date with the log.

    Args:
        store: the history store.
        chat: the core, told what the store holds.
        files: the file layer (whether blocking calls go to a thread; what was synced).
        batch: records per store transaction (at most).
        gather_s: how long records gather before a smaller transaction is written.
    """

    def __init__(
        self,
        store: HistoryStore,
        chat: Chat,
        files: Files,
        *,
        batch: int = BATCH,
        gather_s: float = GATHER_S,
    ) -> None:
        self.store = store
        self.chat = chat
        self.files = files
        self.batch = batch
        self.gather_s = gather_s
        self._count = 0  # records pending
        self._full = trio.Event()  # a batch's worth is pending, or a drain is waiting
        self.committed_lsn = store.lsn  # the last record handed over
        self.last_write_s = 0.0
        self._pending: deque[list[WalRecord]] = deque()  # batches as the committer made them
        self._lock = trio.Lock()  # the store's one writer: writes and syncs take turns
        self._more = trio.Event()
        self._idle = trio.Event()
        self._idle.set()

    @property
    def lag(self) -> int:
        """Committed records the store does not hold yet."""
        return self.committed_lsn - self.store.lsn

    def committed(self, first_lsn: int, records: list[Record]) -> None:
        """The committer made `records` durable, the first at `first_lsn`."""
        self._pending.append([WalRecord(first_lsn + i, r) for i, r in enumerate(records)])
        self._count += len(records)
        self.committed_lsn = first_lsn + len(records) - 1
        if self._count >= self.batch:
            self._full.set()
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._more.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._pending:
                self._idle.set()
                await self._more.wait()
                self._more = trio.Event()
                continue
            with trio.move_on_after(self.gather_s):
                await self._full.wait()
            if self._count < self.batch:
                self._full = trio.Event()
            try:
                await self._write_some()
            except Exception as exc:
                fields = {"error": str(exc), "lag": self.lag, "note": "the log holds them"}
                log.error("checkpoint failed; retrying", extra={"fields": fields})
                await trio.sleep(RETRY_S)

    async def _write_some(self) -> None:
        pending, todo = self._pending, list[WalRecord]()
        taken = 0
        while taken < len(pending) and len(todo) < self.batch:
            todo += pending[taken]
            taken += 1
        async with self._lock:
            started = time.perf_counter()
            lsn = await run_blocking(self.files, self.store.write, todo)
            self.last_write_s = time.perf_counter() - started
        for _ in range(taken):  # only once written: a failed write is tried again
            pending.popleft()
        self._count -= len(todo)
        self.chat.stored(lsn)

    async def drain(self) -> None:
        """Wait until the store holds every record handed over so far (without waiting
        for more to gather)."""
        while self._pending:
            self._full.set()
            await self._idle.wait()

    async def sync(self) -> int:
        """Make the store durable (SQLite checkpoint + fsync). Returns the LSN it covers."""
        async with self._lock:
            lsn = await run_blocking(self.files, self.store.sync)
            self.files.synced(self.store.path)
            return lsn
