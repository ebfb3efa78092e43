"""What the Reconnector checks: per conversation, the seqs a client has seen form a gapless
run with no repeats, across drops, resumes and syncs. Plain Python, unit-tested."""

from __future__ import annotations


class StreamChecker:
    """Feeds of (conv, seq) from pushes and sync batches; reports gaps and duplicates.

    Pushes of one conversation arrive in seq order; a push or a batch event at or below what
    was seen is a duplicate (sync after a reconnect asks from the last seq seen, so an honest
    server never repeats one), and one beyond the next is a gap.
    """

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.gaps: list[tuple[str, int, int]] = []  # (conv, expected, got)
        self.duplicates: list[tuple[str, int]] = []

    def seen(self, conv: str, seq: int) -> str | None:
        """Take one event; return a description of what is wrong with it, if anything."""
        last = self.last.get(conv)
        if last is not None and seq <= last:
            self.duplicates.append((conv, seq))
            return f"duplicate {conv}#{seq}"
        if last is not None and seq != last + 1:
            self.gaps.append((conv, last + 1, seq))
            self.last[conv] = seq
            return f"gap in {conv}: expected #{last + 1}, got #{seq}"
        self.last[conv] = seq
        return None

    def resume_from(self, conv: str) -> int:
        """The `after` for the sync that resumes `conv` after a reconnect."""
        return self.last.get(conv, 0)
