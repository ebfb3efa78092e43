"""Periodic snapshots: the live state to `<data-dir>/snapshots/`, then old WAL segments go.

A snapshot is captured and encoded on the event loop a slice of a few milliseconds at a
time, then written and fsynced in a worker thread, so the loop never waits on it for long.
It holds no events (the history store does). Files are written as
temp -> fsync -> rename -> fsync dir and named by the LSN they cover; the newest `keep` are
kept. A WAL segment is deleted once both the oldest kept snapshot and the durable store
cover it (the store is synced first: `store_sync`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from ..core.snapshot import SnapshotEncoder
from .files import run_blocking
from .layout import list_snapshots, snapshot_path, snapshot_temp_path

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from ..core import Chat
    from .files import Files
    from .wal import Wal

log = logging.getLogger("imcore.snapshot")

#: Encoding runs on the loop in slices this long, then yields to the scheduler. (Encoding
#: in a worker thread instead makes the loop wait for the interpreter lock after every
#: system call, tens of milliseconds at a time.)
SLICE_S = 0.003
KEEP = 2


class Snapshotter:
    """Writes snapshots when enough records or time have passed, or when asked.

    Args:
        chat: the state to snapshot.
        wal: the log; its `durable_lsn` is what a snapshot started now covers.
        directory: `<data-dir>/snapshots`.
        every_records: snapshot after this many records ...
        interval_s: ... or this many seconds with at least one new record.
        store_sync: makes the history store durable; returns the last LSN it holds.
    """

    def __init__(
        self,
        chat: Chat,
        wal: Wal,
        directory: Path,
        files: Files,
        *,
        every_records: int,
        interval_s: float,
        store_sync: Callable[[], Awaitable[int]],
        keep: int = KEEP,
    ) -> None:
        self.chat = chat
        self.wal = wal
        self.directory = directory
        self.files = files
        self.every_records = every_records
        self.interval_s = interval_s
        self.keep = keep
        self.store_sync = store_sync
        existing = list_snapshots(directory)
        self.last_lsn = existing[-1][0] if existing else 0
        self.last_duration_s = 0.0
        self._lock = trio.Lock()
        self._wakeup = trio.Event()
        self.on_snapshot: Callable[[float], None] | None = None  # told each one's duration

    def records_since(self) -> int:
        return self.wal.durable_lsn - self.last_lsn

    def poke(self) -> None:
        """Tell the scheduler new records were committed (checked against `every_records`)."""
        if self.records_since() >= self.every_records:
            self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self.interval_s):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            if self.records_since() > 0 and not self.wal.failed:
                try:
                    await self.take()
                except OSError as exc:
                    fields = {"error": str(exc), "note": "the log still holds everything"}
                    log.error("snapshot failed", extra={"fields": fields})

    async def take(self, *, force: bool = False) -> Path | None:
        """Write a snapshot of the committed state now. Returns its path (None if nothing
        changed since the last one, unless `force`: an upgrade's snapshot of a new format)."""
        async with self._lock:
            lsn = self.wal.durable_lsn
            if lsn == self.last_lsn and list_snapshots(self.directory) and not force:
                return None
            started = time.monotonic()
            await self.wal.roll()  # later records go to a new segment: the old ones can go
            encoder = SnapshotEncoder(lsn, self.chat.clock.value)
            pieces = [encoder.begin()]
            conversations = self.chat.conversation_ids()
            slice_started = time.perf_counter()
            for conv in conversations:
                pieces.append(encoder.conversation(self.chat.capture(conv)))
                if time.perf_counter() - slice_started > SLICE_S:
                    await trio.lowlevel.checkpoint()
                    slice_started = time.perf_counter()
            pieces.append(encoder.filter(self.chat.capture_filter()))  # after: see core.snapshot
            pieces.append(encoder.end())
            path = await run_blocking(self.files, self._write, lsn, pieces)
            self.last_lsn = lsn
            self.last_duration_s = time.monotonic() - started
            if self.on_snapshot is not None:
                self.on_snapshot(self.last_duration_s)
            stored = await self.store_sync()
            deleted = await run_blocking(self.files, self._prune, stored)
            fields = {
                "lsn": lsn,
                "conversations": len(conversations),
                "bytes": path.stat().st_size,
                "duration_ms": int(self.last_duration_s * 1000),
                "wal_segments_deleted": deleted,
            }
            log.info("snapshot", extra={"fields": fields})
            return path

    def _write(self, lsn: int, pieces: list[bytes]) -> Path:
        """temp file -> fsync -> rename -> fsync dir (a worker thread: no Python work but
        joining, so the loop keeps the interpreter)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = snapshot_path(self.directory, lsn)
        temp = snapshot_temp_path(self.directory, lsn)
        if temp.exists():
            temp.unlink()
        fd = self.files.open_append(temp, create=True)
        try:
            self.files.write(fd, b"".join(pieces))
            self.files.fsync(fd)
        finally:
            self.files.close(fd)
        self.files.replace(temp, final)
        self.files.fsync_dir(self.directory)
        return final

    def _prune(self, stored: int) -> int:
        """Keep the newest snapshots; delete the WAL wholly below the oldest kept one and
        the store's durable LSN `stored`."""
        snapshots = list_snapshots(self.directory)
        for _, path in snapshots[: -self.keep]:
            self.files.remove(path)
        kept = snapshots[-self.keep :]
        return self.wal.delete_through(min(kept[0][0], stored)) if kept else 0
