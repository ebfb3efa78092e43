"""The file operations the WAL and snapshots use, behind one class so tests can inject
faults (disk full, EIO) or simulate a power loss that drops what was never fsynced.

Blocking: they run through `run_blocking`, in a worker thread, never on the loop.
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import outcome

T = TypeVar("T")


class Files:
    """Plain POSIX files."""

    #: Whether calls go to a worker thread. Tests on trio's MockClock turn it off: the
    #: clock would jump ahead while the loop waited on a thread doing real I/O.
    in_thread = True

    def open_append(self, path: Path, *, create: bool) -> int:
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        return os.open(path, flags, 0o644)

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, path: Path, size: int) -> None:
        os.truncate(path, size)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def remove(self, path: Path) -> None:
        os.remove(path)

    def synced(self, path: Path) -> None:
        """A file another library writes (SQLite's) was just made durable by it."""


async def run_blocking(files: Files, fn: Callable[..., T], *args: object) -> T:
    """Run a blocking file operation of `files` off the event loop (see `in_thread`).

    Not cancellable once started: a write in flight is waited for. Unlike
    `trio.to_thread.run_sync` this takes no capacity-limiter token, whose acquisition
    passes through the scheduler: a commit waits behind every task that is ready at that
    moment, once more for each pass, and the few callers here never need a limit.
    """
    if not files.in_thread:
        await trio.lowlevel.checkpoint()
        return fn(*args)
    await trio.lowlevel.checkpoint_if_cancelled()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[T]) -> None:  # in the worker thread
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    trio.lowlevel.start_thread_soon(partial(fn, *args), deliver)
    result: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
    return result
