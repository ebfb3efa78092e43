"""One conversation's live state: head, floor, roster, unread counters and its hot tail.

Pure: no I/O. Events get here only through `Chat.apply`, so readers never see an event
that is not committed.

The conversation's whole history lives in the history store on disk; memory holds what
is live. Per conversation that is:

- `head`, `ts_last` and `floor` (the oldest retained seq);
- the seqs of membership events (`sys_seqs`) and of each sender's messages (`sent_by`),
  4 bytes each in arrays, so an unread count is exact and two bisections however long the
  log, without a read of the disk;
- the *tail*: the newest events, a contiguous run ending at `head`, from which the common
  sync (a reconnect after a short gap) and resends are served. Its length is set by the
  server's byte budget for all tails together (`Chat`), never by this class.

Because seqs are gapless from `floor` to `head`, which seqs a sync page holds is known
from these numbers alone (`wanted`); only the events below the tail have to be read from
the store.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from .membership import Roster

if TYPE_CHECKING:
    from .frames import Event

RosterState = tuple[str | None, str | None, bool, tuple[tuple[str, str], ...]]
SEQ_ARRAY = "I"  # u32: a conversation's seqs, little-endian in snapshots
_BIG_ENDIAN = array(SEQ_ARRAY, [1]).tobytes()[0] == 0


def seq_array(data: bytes = b"") -> array[int]:
    """An array of seqs from the bytes `seq_bytes` made."""
    made = array(SEQ_ARRAY)
    made.frombytes(data)
    if _BIG_ENDIAN:
        made.byteswap()
    return made


def seq_bytes(seqs: array[int]) -> bytes:
    """The little-endian bytes of an array of seqs."""
    if _BIG_ENDIAN:
        seqs = array(SEQ_ARRAY, seqs)
        seqs.byteswap()
    return seqs.tobytes()


@dataclass(frozen=True, slots=True)
class ConversationState:
    """An immutable copy of one conversation's live state: what a snapshot stores.

    `roster` is None for a direct conversation, else (owner, title, public, roles).
    `reads` and `delivered` are the committed cursors, user -> seq. `sys_seqs` and
    `sent_by` are `seq_bytes` of the membership events' seqs and of each sender's message
    seqs from `floor` on. `events` is empty except in states read from snapshots of
    format 1 and 2, which held the events themselves (an upgrade moves them to the store).
    """

    conv: str
    head: int
    ts_last: int
    floor: int
    roster: RosterState | None
    reads: dict[str, int]
    delivered: dict[str, int]
    sys_seqs: bytes = b""
    sent_by: dict[str, bytes] | None = None
    events: tuple[Event, ...] = ()


def _above(seqs: array[int] | None, seq: int) -> int:
    """How many of the ascending `seqs` are above `seq`."""
    return 0 if not seqs else len(seqs) - bisect_right(seqs, seq)


class Conversation:
    """The live state of one conversation.

    Args:
        conv: its id.
        staged: for a group, the roster as of the last sequenced event; None for a DM.
    """

    __slots__ = (
        "conv",
        "floor",
        "head",
        "roster",
        "sent_by",
        "staged",
        "sys_seqs",
        "tail",
        "tail_first",
        "ts_last",
    )

    def __init__(self, conv: str, staged: Roster | None = None) -> None:
        self.conv = conv
        self.head = 0  # last committed seq
        self.ts_last = 0
        self.floor = 1  # the oldest retained seq; head + 1 when none is retained
        self.tail: deque[Event] = deque()  # the newest events, ending at head
        self.tail_first = 1  # seq of tail[0]; head + 1 when the tail is empty
        self.sys_seqs: array[int] = array(SEQ_ARRAY)
        self.sent_by: dict[str, array[int]] = {}
        self.staged = staged
        self.roster: Roster | None = Roster() if staged is not None else None

    def capture(self, reads: dict[str, int], delivered: dict[str, int]) -> ConversationState:
        """An immutable copy of the live state, with the conversation's cursors (copies,
        from `Cursors`)."""
        roster = self.roster
        state = None
        if roster is not None:
            state = (roster.owner, roster.title, roster.public, tuple(roster.roles.items()))
        return ConversationState(
            self.conv,
            self.head,
            self.ts_last,
            self.floor,
            state,
            reads,
            delivered,
            seq_bytes(self.sys_seqs),
            {sender: seq_bytes(seqs) for sender, seqs in self.sent_by.items()},
        )

    @classmethod
    def restore(cls, state: ConversationState) -> Conversation:
        """A conversation as captured; its staged roster starts equal to the committed one.
        A state of the old formats (with `events`) gets its counters from the events; the
        events themselves are not kept (they belong in the store)."""
        roster = None
        if state.roster is not None:
            roster = Roster()
            owner, title, public, roles = state.roster
            roster.owner, roster.title, roster.public = owner, title, public
            roster.roles = dict(roles)
        c = cls(state.conv, roster.copy() if roster is not None else None)
        c.roster = roster
        c.head, c.ts_last, c.floor = state.head, state.ts_last, state.floor
        c.tail_first = state.head + 1
        c.sys_seqs = seq_array(state.sys_seqs)
        c.sent_by = {s: seq_array(b) for s, b in (state.sent_by or {}).items()}
        for e in state.events:
            c._count(e)
        return c

    def _count(self, event: Event) -> None:
        if event.sys is None:
            mine = self.sent_by.get(event.sender)
            if mine is None:
                mine = self.sent_by[event.sender] = array(SEQ_ARRAY)
            mine.append(event.seq)
        else:
            self.sys_seqs.append(event.seq)

    def append(self, event: Event) -> None:
        """Add the next committed event (to the tail, and to the counters)."""
        if not self.tail:
            self.tail_first = event.seq
        self.tail.append(event)
        self.head, self.ts_last = event.seq, event.ts
        self._count(event)

    def evict_first(self) -> Event | None:
        """Drop the oldest event of the tail (it is in the store). Returns it, if any."""
        if not self.tail:
            return None
        self.tail_first += 1
        return self.tail.popleft()

    def retain_from(self, floor: int) -> list[Event]:
        """Move the floor up to `floor`: older events are gone. Returns the tail events
        dropped with them."""
        if floor <= self.floor:
            return []
        self.floor = min(floor, self.head + 1)
        dropped = []
        while self.tail and self.tail_first < self.floor:
            dropped.append(self.tail.popleft())
            self.tail_first += 1
        if not self.tail:
            self.tail_first = self.head + 1
        cut = self.floor - 1
        del self.sys_seqs[: bisect_right(self.sys_seqs, cut)]
        for sender in list(self.sent_by):
            seqs = self.sent_by[sender]
            del seqs[: bisect_right(seqs, cut)]
            if not seqs:
                del self.sent_by[sender]
        return dropped

    def unread(self, user: str, read: int) -> int:
        """Retained message events after `read` sent by others (spec §3)."""
        after = max(read, self.floor - 1)
        if after >= self.head:
            return 0
        messages = self.head - after - _above(self.sys_seqs, after)
        return messages - _above(self.sent_by.get(user), after)

    def wanted(self, after: int | None, before: int | None, limit: int) -> tuple[int, int, bool]:
        """The seqs of a sync page (spec §8), `low..high` (empty when low > high), and
        whether more lie in that direction.

        With `after`: the first `limit` events above it (and below `before`, if given).
        With only `before`: the newest `limit` events below it.
        With neither: the newest `limit` events.
        """
        top = self.head if before is None else min(before - 1, self.head)
        if after is not None:
            low = max(after + 1, self.floor)
            high = min(top, low + limit - 1)
            return low, high, top > high
        low = max(self.floor, top - limit + 1)
        return low, top, low > self.floor and top >= self.floor

    def from_tail(self, low: int, high: int) -> list[Event]:
        """The tail's events with seqs in `low..high`."""
        start = max(low, self.tail_first) - self.tail_first
        stop = high - self.tail_first + 1
        if stop <= start:
            return []
        return list(islice(self.tail, start, stop))
