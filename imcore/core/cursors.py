"""Read and delivered cursors per (conversation, user). Pure: no I/O.

Both are cumulative and only move forward (spec §8). Read cursors are committed state
(they come back after a restart); delivered cursors only drive `delivered` pushes.
"""

from __future__ import annotations


class Cursors:
    __slots__ = ("_delivered", "_read")

    def __init__(self) -> None:
        self._read: dict[tuple[str, str], int] = {}
        self._delivered: dict[tuple[str, str], int] = {}

    def read(self, conv: str, user: str) -> int:
        """The user's read cursor in `conv`; 0 before the first `read`."""
        return self._read.get((conv, user), 0)

    def advance_read(self, conv: str, user: str, seq: int) -> bool:
        """Move the read cursor to `seq` if that is forward. Returns whether it moved."""
        return _advance(self._read, (conv, user), seq)

    def advance_delivered(self, conv: str, user: str, seq: int) -> bool:
        """Move the delivered cursor to `seq` if that is forward. Returns whether it moved."""
        return _advance(self._delivered, (conv, user), seq)


def _advance(cursors: dict[tuple[str, str], int], key: tuple[str, str], seq: int) -> bool:
    if seq <= cursors.get(key, 0):
        return False
    cursors[key] = seq
    return True
