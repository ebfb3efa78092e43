"""Group commit: the seam between sequencing and applying (spec §7).

Sessions hand over `Outcome`s without waiting; one task takes everything queued, commits
the batch's records in one call to the log, then applies each record and releases its
reply and pushes, in the order they were sequenced. No reply and no push leaves before the
commit of its record. A log that fails switches the core to read-only (`unavailable`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import trio

from ..core import Event, refusal

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core import Chat, Deliveries, Outcome, Record, ServerFrame
    from .metrics import Metrics


log = logging.getLogger("imcore.commit")


class CommitLog(Protocol):
    """Where committed records go. The durable implementation writes and fsyncs a WAL."""

    async def commit(self, records: list[Record]) -> int:
        """Make `records` durable, in order, or raise OSError. Returns the first's LSN."""


class Committer:
    """Batches outcomes into commits and releases them afterwards.

    Args:
        chat: the core, to apply committed records to.
        publish: where the pushes of applied records go (the fan-out).
        log: the commit log.
        metrics: counts sends and ack latencies.
        on_commit: called after each batch is released (the snapshotter's poke).
        on_durable: told each durable batch, with its first LSN (the checkpoint).
    """

    def __init__(
        self,
        chat: Chat,
        publish: Callable[[Deliveries], None],
        log: CommitLog,
        metrics: Metrics,
        on_commit: Callable[[], None] = lambda: None,
        on_durable: Callable[[int, list[Record]], None] = lambda first, records: None,
    ) -> None:
        self.chat = chat
        self.publish = publish
        self.log = log
        self.metrics = metrics
        self.on_commit = on_commit
        self.on_durable = on_durable
        self._queue: deque[tuple[Outcome, Callable[[ServerFrame | None], None], float]] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._idle = trio.lowlevel.ParkingLot()
        self._busy = False

    def submit_nowait(self, outcome: Outcome, reply: Callable[[ServerFrame | None], None]) -> None:
        """Commit `outcome`'s record with the next batch, then apply it and call `reply` with
        its reply (or with `unavailable` if the commit failed)."""
        self._queue.append((outcome, reply, time.perf_counter()))
        if len(self._queue) == 1:
            self._lot.unpark_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        queue = self._queue
        while True:
            while not queue:
                self._busy = False
                self._idle.unpark_all()
                await self._lot.park()
            self._busy = True
            batch = list(queue)
            queue.clear()
            records = [o.record for o, _, _ in batch if o.record is not None]
            lsn = 0
            if records and not self.chat.read_only:
                try:
                    lsn = await self.log.commit(records)
                except Exception as exc:
                    # Whatever the cause, nothing of this batch may be acked; a failure
                    # that is not the disk's is a bug, logged with its traceback.
                    if not isinstance(exc, OSError):
                        log.exception("commit failed unexpectedly")
                    log.critical("the log cannot be written; refusing writes until restart")
                    self.chat.commit_failed()
            if self.chat.read_only:
                for outcome, reply, _ in batch:
                    reply(refusal(outcome))
                continue
            if records:
                self.on_durable(lsn, records)
            publish, ack_seconds = self.publish, self.metrics.ack_seconds
            now = time.perf_counter()
            for outcome, reply, arrived in batch:
                if outcome.record is not None:
                    deliveries = self.chat.apply(outcome.record, lsn)
                    lsn += 1
                    if deliveries is not None:
                        publish(deliveries)
                if outcome.reply is not None:
                    reply(outcome.reply)
                    ack_seconds.observe(now - arrived)
            self.metrics.sends.inc(sum(isinstance(r, Event) and r.sys is None for r in records))
            self.on_commit()

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed and released."""
        while self._queue or self._busy:
            await self._idle.park()
