"""Read and delivered cursors per (conversation, user). Pure: no I/O.

Both are cumulative and only move forward (spec §8). Read cursors are committed state
(they come back after a restart); delivered cursors only drive `delivered` pushes.
"""

from __future__ import annotations


class Cursors:
    __slots__ = ("_delivered", "_read")

    def __init__(self) -> None:
        self._read: dict[str, dict[str, int]] = {}  # conv -> user -> seq
        self._delivered: dict[str, dict[str, int]] = {}

    def read(self, conv: str, user: str) -> int:
        """The user's read cursor in `conv`; 0 before the first `read`."""
        return self._read.get(conv, {}).get(user, 0)

    def reads(self, conv: str) -> dict[str, int]:
        """Every read cursor of `conv` (a copy)."""
        return dict(self._read.get(conv, {}))

    def advance_read(self, conv: str, user: str, seq: int) -> bool:
        """Move the read cursor to `seq` if that is forward. Returns whether it moved."""
        return _advance(self._read, conv, user, seq)

    def advance_delivered(self, conv: str, user: str, seq: int) -> bool:
        """Move the delivered cursor to `seq` if that is forward. Returns whether it moved."""
        return _advance(self._delivered, conv, user, seq)


def _advance(cursors: dict[str, dict[str, int]], conv: str, user: str, seq: int) -> bool:
    mine = cursors.setdefault(conv, {})
    if seq <= mine.get(user, 0):
        return False
    mine[user] = seq
    return True
