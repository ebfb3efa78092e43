"""The write-ahead log on disk: segment files, group commit and the fsync policies (spec §7).

Record bytes come from `core.wal_format`; this module only appends them, fsyncs, rolls
segments and deletes the ones a snapshot has made unnecessary. Every blocking call runs in
a worker thread, so the event loop keeps serving while the disk works.

A write or fsync that fails is never retried (after a failed fsync the kernel may have
dropped the dirty pages and marked them clean: the "fsyncgate" lesson). The log turns
`failed` and refuses every later commit until the server is restarted.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING

import trio

from ..core.wal_format import SEGMENT_MAGIC, encode_record
from .files import run_blocking
from .layout import list_segments, segment_path

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ..core import Record
    from .files import Files

log = logging.getLogger("imcore.wal")

SEGMENT_BYTES = 64 * 1024 * 1024


class Wal:
    """Appends framed records to the current segment and makes them durable.

    Args:
        directory: `<data-dir>/wal`.
        files: the file layer.
        next_lsn: the LSN the next record gets.
        segment: (first LSN, current size) of the segment to append to, or None to start one.
        fsync: "always" (fsync every commit), "interval" or "never" (the caller syncs).
        segment_bytes: roll to a new segment past this size.
    """

    def __init__(
        self,
        directory: Path,
        files: Files,
        *,
        next_lsn: int,
        segment: tuple[int, int] | None,
        fsync: str,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.directory = directory
        self.files = files
        self.fsync_policy = fsync
        self.segment_bytes = segment_bytes
        self.next_lsn = next_lsn
        self.durable_lsn = next_lsn - 1  # written (and fsynced, under "always")
        self.synced_lsn = next_lsn - 1  # fsynced
        self.failed = False
        self.bytes_written = 0
        self._fd: int | None = None
        self._segment_first = 0
        self._segment_size = 0
        self._lock = trio.Lock()  # commits, rolls and interval syncs take turns
        self._pending = segment
        #: told how long each batch's write (+ fsync) took; called from the worker thread
        self.on_write: Callable[[float], None] | None = None

    def _open(self, first_lsn: int) -> None:
        """Open the segment to append to, or start one at `first_lsn` (thread)."""
        if self._pending is not None:
            first, size = self._pending
            self._fd = self.files.open_append(segment_path(self.directory, first), create=False)
            self._pending = None
            if size < len(SEGMENT_MAGIC):
                # Created just before a crash, before its magic (recovery cut any part of
                # the magic off as a torn tail): records appended without it would make a
                # segment the next recovery refuses.
                self.files.write(self._fd, SEGMENT_MAGIC)
                self.files.fsync(self._fd)
                size = len(SEGMENT_MAGIC)
            self._segment_first, self._segment_size = first, size
        else:
            self._start_segment(first_lsn)

    def _start_segment(self, first: int) -> None:
        """Create the segment for LSN `first` and make its directory entry durable (thread)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = self.files.open_append(segment_path(self.directory, first), create=True)
        self.files.write(fd, SEGMENT_MAGIC)
        self.files.fsync(fd)
        self.files.fsync_dir(self.directory)
        self._fd, self._segment_first, self._segment_size = fd, first, len(SEGMENT_MAGIC)

    def _roll(self, first_lsn: int) -> None:
        """Finish the current segment durably and start one at `first_lsn` (thread)."""
        if self._fd is None:
            self._open(first_lsn)
        if self._segment_size <= len(SEGMENT_MAGIC):
            return  # the current segment is still empty
        assert self._fd is not None
        self.files.fsync(self._fd)
        self.files.close(self._fd)
        self._fd = None
        self._start_segment(first_lsn)

    def _append(self, data: bytes, sync: bool, first_lsn: int) -> None:
        """Write one batch starting at `first_lsn` (thread); roll first if it would overflow."""
        if self._fd is None:
            self._open(first_lsn)
        if self._segment_size + len(data) > self.segment_bytes:
            self._roll(first_lsn)
        assert self._fd is not None
        started = time.perf_counter()
        self.files.write(self._fd, data)
        self._segment_size += len(data)
        if sync:
            self.files.fsync(self._fd)
        if self.on_write is not None:
            self.on_write(time.perf_counter() - started)

    async def commit(self, records: list[Record]) -> int:
        """Append `records` as one write (and one fsync under "always"). Returns the LSN
        of the first.

        Raises:
            OSError: the disk refused; the log is now `failed` and refuses all later commits.
        """
        # LSNs are given in the order records reach the file. The lock is nearly always
        # free, and taking it without `async with` spares a pass through the scheduler.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            if self.failed:
                raise OSError("the write-ahead log failed earlier; restart the server")
            first = self.next_lsn
            data = b"".join(encode_record(first + i, r) for i, r in enumerate(records))
            sync = self.fsync_policy == "always"
            try:
                await run_blocking(self.files, self._append, data, sync, first)
            except OSError as exc:
                self._fail("write", exc)
                raise
            self.next_lsn += len(records)
            self.bytes_written += len(data)
            self.durable_lsn = self.next_lsn - 1
            if sync:
                self.synced_lsn = self.durable_lsn
            return first
        finally:
            self._lock.release()

    async def sync(self) -> None:
        """fsync what was written (the "interval" policy's timer, and shutdown)."""
        if self.failed or self._fd is None or self.synced_lsn == self.durable_lsn:
            return
        async with self._lock:
            target = self.durable_lsn
            fd = self._fd
            try:
                await run_blocking(self.files, self.files.fsync, fd)
            except OSError as exc:
                self._fail("fsync", exc)
                raise
            self.synced_lsn = target

    async def roll(self) -> None:
        """Start a new segment, so the ones before it can be deleted after a snapshot."""
        if self.failed:
            return
        async with self._lock:
            try:
                await run_blocking(self.files, self._roll, self.next_lsn)
            except OSError as exc:
                self._fail("roll", exc)
                raise
            self.synced_lsn = self.durable_lsn

    async def run_interval_sync(self, interval_ms: int) -> None:
        """Under `--fsync interval`: fsync every `interval_ms` while there is something new."""
        while True:
            await trio.sleep(interval_ms / 1000)
            try:
                await self.sync()
            except OSError:
                return

    def delete_through(self, lsn: int) -> int:
        """Delete segments holding only records up to `lsn` (blocking; small). Returns count."""
        segments = list_segments(self.directory)
        deleted = 0
        for (first, path), (next_first, _) in itertools.pairwise(segments):
            if next_first - 1 <= lsn and first != self._segment_first:
                self.files.remove(path)
                deleted += 1
        return deleted

    def _fail(self, what: str, exc: OSError) -> None:
        self.failed = True
        log.critical(
            "WAL %s failed: %s. Writes are refused (unavailable) until restart; reads go on.",
            what,
            exc,
        )

    def close(self) -> None:
        if self._fd is not None:
            self.files.close(self._fd)
            self._fd = None
