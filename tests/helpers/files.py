"""File layers that misbehave on purpose: a failing disk, a slow one, and a power loss."""

from __future__ import annotations

import errno
import os
import threading
from typing import TYPE_CHECKING

from imcore.server.files import Files

if TYPE_CHECKING:
    from pathlib import Path


class FailingFiles(Files):
    """Writes (or fsyncs) start failing after `ok` successful calls, and keep failing."""

    def __init__(self, *, ok: int, on: str = "write", code: int = errno.ENOSPC) -> None:
        self.ok, self.on, self.code = ok, on, code
        self.calls = 0

    def _maybe_fail(self, what: str) -> None:
        if what != self.on:
            return
        self.calls += 1
        if self.calls > self.ok:
            raise OSError(self.code, os.strerror(self.code))

    def write(self, fd: int, data: bytes) -> None:
        self._maybe_fail("write")
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        super().fsync(fd)


class GatedFiles(Files):
    """Real files whose fsync waits while the test holds `gate` clear: a commit that lasts
    as long as the test wants. The wait is in the worker thread; the loop goes on."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()

    def fsync(self, fd: int) -> None:
        if not self.gate.wait(timeout=30):
            raise OSError(errno.EIO, "the test never opened the gate")
        super().fsync(fd)


class PowerLossFiles(Files):
    """Real files, plus a record of what an fsync made durable (after Jepsen's LazyFS).

    `crash()` then does to the directory what a power loss would: every file is cut back to
    the size it had at its last fsync, files whose directory entry was never fsynced vanish,
    and renames not followed by a directory fsync are undone.

    SQLite writes its files itself; what it made durable is learnt from `synced` (after a
    checkpoint that fsynced the database and emptied its WAL). For each database in
    `sqlite`, a crash puts back the bytes it had then, or removes it if it was never
    synced, and drops its WAL and shared-memory files: of what `synchronous=NORMAL`
    allows a power loss to take, all of it.
    """

    def __init__(self, sqlite: tuple[Path, ...] = ()) -> None:
        self.sqlite = sqlite
        self.sqlite_durable: dict[Path, bytes] = {}
        self.paths: dict[int, Path] = {}
        self.durable_size: dict[Path, int] = {}
        self.new_entries: dict[Path, set[Path]] = {}  # dir -> entries not yet fsynced
        self.renames: dict[Path, list[tuple[Path, Path]]] = {}

    def open_append(self, path: Path, *, create: bool) -> int:
        fd = super().open_append(path, create=create)
        self.paths[fd] = path
        if create:
            self.durable_size[path] = 0
            self.new_entries.setdefault(path.parent, set()).add(path)
        else:
            self.durable_size.setdefault(path, path.stat().st_size)
        return fd

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self.durable_size[self.paths[fd]] = os.fstat(fd).st_size

    def close(self, fd: int) -> None:
        self.paths.pop(fd, None)
        super().close(fd)

    def fsync_dir(self, path: Path) -> None:
        super().fsync_dir(path)
        self.new_entries.pop(path, None)
        self.renames.pop(path, None)

    def replace(self, src: Path, dst: Path) -> None:
        super().replace(src, dst)
        self.renames.setdefault(dst.parent, []).append((src, dst))
        self.durable_size[dst] = self.durable_size.pop(src, 0)

    def synced(self, path: Path) -> None:
        self.sqlite_durable[path] = path.read_bytes()

    def crash(self) -> None:
        for db in self.sqlite:
            durable = self.sqlite_durable.get(db)
            if durable is not None:
                db.write_bytes(durable)
            for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                if path.exists() and (durable is None or path != db):
                    path.unlink()
        for moves in self.renames.values():
            for src, dst in reversed(moves):
                if dst.exists():
                    os.replace(dst, src)
                    self.durable_size[src] = self.durable_size.pop(dst, 0)
        for path, size in self.durable_size.items():
            if path.exists() and path.stat().st_size > size:
                os.truncate(path, size)
        for entries in self.new_entries.values():
            for path in entries:
                if path.exists():
                    path.unlink()


class InlineFiles(Files):
    """Real files, operated on the event loop: for tests on trio's MockClock, where a wait
    on a worker thread would let the clock jump ahead."""

    in_thread = False
