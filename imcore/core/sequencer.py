"""Gapless per-conversation seq, the Lamport ts, and the cmid dedup index. Pure: no I/O.

Theory of operation
-------------------

Every write is *sequenced* before it is committed and *applied* after (spec §4, §7):

    submit ──> Sequencer.sequence ──> (commit: the server's WAL) ──> Chat.apply

A conversation's next seq is therefore counted here, ahead of what readers can see:
several sends to one conversation may be in flight in one group commit, and each needs its
own seq before any of them is applied. The conversation's visible `head` (conversation.py)
catches up as records are applied, in the same order.

    # spec §4: seq is 1, 2, 3 ... gapless per conversation
    # spec §6: ts = clock + 1, and the clock moves there

Dedup (spec §4) has two parts. The exact index maps (conversation, sender, cmid) to the
(seq, ts) first given, from the moment of sequencing, so a retry that arrives while the
original is still being committed is already a dup; it holds the cmids of events not yet
known to be in the history store, and an entry leaves when its event leaves the hot tail
(`Chat.stored`), which happens only once the store has it. Every committed cmid also goes
into the filter (`dedup.CmidFilter`), which says "certainly new" for nearly every new cmid;
for the rest the store is asked (`history.FindCmid`).

If a commit fails, nothing here is rolled back: `Chat.commit_failed` stops all writes until
restart, and restart rebuilds this state from what was committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dedup import CmidFilter

if TYPE_CHECKING:
    from .clock import LamportClock
    from .frames import Event


class Sequencer:
    """Hands out (seq, ts) and remembers cmids.

    Args:
        clock: the server's one Lamport clock, shared with the rest of the core.
    """

    __slots__ = ("_cmids", "_heads", "clock", "filter")

    def __init__(self, clock: LamportClock) -> None:
        self.clock = clock
        self._heads: dict[str, int] = {}
        self._cmids: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.filter = CmidFilter()

    def head(self, conv: str) -> int:
        """The last seq given out in `conv`, committed or not."""
        return self._heads.get(conv, 0)

    def find(self, conv: str, sender: str, cmid: str) -> tuple[int, int] | None:
        """The (seq, ts) of an earlier send with this cmid that is in flight or in the hot
        tail (the store has the rest: see `may_be_stored`)."""
        return self._cmids.get((conv, sender, cmid))

    def sequence(self, conv: str, sender: str, cmid: str | None) -> tuple[int, int]:
        """Give the next event of `conv` its seq and ts.

        Returns:
            (seq, ts), with seq = previous + 1 in `conv` and ts = clock + 1.
        """
        seq = self._heads.get(conv, 0) + 1
        self._heads[conv] = seq
        ts = self.clock.tick()
        if cmid is not None:
            self._cmids[(conv, sender, cmid)] = (seq, ts)
        return seq, ts

    def may_be_stored(self, conv: str, sender: str, cmid: str) -> bool:
        """Whether the store may hold an event of `sender` with this cmid (the filter)."""
        return self.filter.may_contain(conv, sender, cmid)

    def committed(self, event: Event) -> None:
        """An event with a cmid was committed: the filter keeps it for good."""
        assert event.cmid is not None
        self.filter.add(event.conv, event.sender, event.cmid)

    def forget(self, conv: str, sender: str, cmid: str) -> None:
        """Drop a cmid from the exact index: its event is in the store (or gone)."""
        self._cmids.pop((conv, sender, cmid), None)

    def restore(self, conv: str, head: int) -> None:
        """Take in a conversation loaded from a snapshot: its head."""
        self._heads[conv] = max(self._heads.get(conv, 0), head)

    def replay(self, event: Event) -> None:
        """Take in an event sequenced by an earlier run, when rebuilding state from the log."""
        self._heads[event.conv] = event.seq
        self.clock.observe(event.ts)
        if event.cmid is not None:
            self._cmids[(event.conv, event.sender, event.cmid)] = (event.seq, event.ts)
