"""Read and delivered cursors per (conversation, user). Pure: no I/O.

Both are cumulative and only move forward (spec §8), and both are committed state: they
move when `Chat.apply` applies a committed record, and come back after a restart.

A delivered cursor also has a *staged* value, the highest seq of a delivered record
sequenced so far (committed or still in flight). A `recv` is checked against it, so in a
busy conversation only the recvs that move it make a record to commit.
"""

from __future__ import annotations


class Cursors:
    __slots__ = ("_delivered", "_read", "_staged")

    def __init__(self) -> None:
        self._read: dict[str, dict[str, int]] = {}  # conv -> user -> seq
        self._delivered: dict[str, dict[str, int]] = {}  # committed
        self._staged: dict[str, dict[str, int]] = {}  # sequenced: never below committed

    def read(self, conv: str, user: str) -> int:
        """The user's read cursor in `conv`; 0 before the first `read`."""
        return self._read.get(conv, {}).get(user, 0)

    def reads(self, conv: str) -> dict[str, int]:
        """Every read cursor of `conv` (a copy)."""
        return dict(self._read.get(conv, {}))

    def advance_read(self, conv: str, user: str, seq: int) -> bool:
        """Move the read cursor to `seq` if that is forward. Returns whether it moved."""
        return _advance(self._read, conv, user, seq)

    def delivered(self, conv: str, user: str) -> int:
        """The user's committed delivered cursor in `conv`; 0 before the first."""
        return self._delivered.get(conv, {}).get(user, 0)

    def delivered_all(self, conv: str) -> dict[str, int]:
        """Every committed delivered cursor of `conv` (a copy)."""
        return dict(self._delivered.get(conv, {}))

    def stage_delivered(self, conv: str, user: str, seq: int) -> bool:
        """Move the staged delivered cursor to `seq` if that is forward (a record for it
        is on its way to the log). Returns whether it moved."""
        return _advance(self._staged, conv, user, seq)

    def advance_delivered(self, conv: str, user: str, seq: int) -> bool:
        """Move the committed delivered cursor to `seq` if that is forward (and the staged
        one with it, for records replayed at a restart). Returns whether it moved."""
        _advance(self._staged, conv, user, seq)
        return _advance(self._delivered, conv, user, seq)


def _advance(cursors: dict[str, dict[str, int]], conv: str, user: str, seq: int) -> bool:
    mine = cursors.setdefault(conv, {})
    if seq <= mine.get(user, 0):
        return False
    mine[user] = seq
    return True
