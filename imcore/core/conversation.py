"""One conversation's committed log: the seq index, retention floor and sync pages.

Pure: no I/O. Events get here only through `Chat.apply`, so readers never see an event
that is not committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from sortedcontainers import SortedDict, SortedList

from .membership import Roster

if TYPE_CHECKING:
    from .frames import Event

RosterState = tuple[str | None, str | None, bool, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class ConversationState:
    """An immutable copy of one committed conversation: what a snapshot stores.

    `roster` is None for a direct conversation, else (owner, title, public, roles).
    `reads` and `delivered` are the committed cursors, user -> seq.
    """

    conv: str
    head: int
    ts_last: int
    roster: RosterState | None
    reads: dict[str, int]
    delivered: dict[str, int]
    events: tuple[Event, ...]


class Conversation:
    """The retained events of one conversation, indexed by seq.

    Args:
        conv: its id.
        staged: for a group, the roster as of the last sequenced event; None for a DM.
    """

    __slots__ = ("conv", "events", "head", "messages", "roster", "sent_by", "staged", "ts_last")

    def __init__(self, conv: str, staged: Roster | None = None) -> None:
        self.conv = conv
        self.events: SortedDict = SortedDict()  # seq -> Event
        self.head = 0  # last committed seq
        self.ts_last = 0
        # Seqs of message events (not membership), overall and per sender, so an unread
        # count is two bisections however long the log.
        self.messages: SortedList = SortedList()
        self.sent_by: dict[str, SortedList] = {}
        self.staged = staged
        self.roster: Roster | None = Roster() if staged is not None else None

    def capture(self, reads: dict[str, int], delivered: dict[str, int]) -> ConversationState:
        """An immutable copy of the committed state (events are immutable, so it is cheap),
        with the conversation's cursors (copies, from `Cursors`)."""
        roster = self.roster
        state = None
        if roster is not None:
            state = (roster.owner, roster.title, roster.public, tuple(roster.roles.items()))
        return ConversationState(
            self.conv,
            self.head,
            self.ts_last,
            state,
            reads,
            delivered,
            tuple(self.events.values()),
        )

    @classmethod
    def restore(cls, state: ConversationState) -> Conversation:
        """A conversation as captured; its staged roster starts equal to the committed one."""
        roster = None
        if state.roster is not None:
            roster = Roster()
            owner, title, public, roles = state.roster
            roster.owner, roster.title, roster.public = owner, title, public
            roster.roles = dict(roles)
        c = cls(state.conv, roster.copy() if roster is not None else None)
        c.roster = roster
        events = state.events
        c.events = SortedDict((e.seq, e) for e in events)
        messages = [e for e in events if e.sys is None]
        c.messages = SortedList(e.seq for e in messages)
        by_sender: dict[str, list[int]] = {}
        for e in messages:
            by_sender.setdefault(e.sender, []).append(e.seq)
        c.sent_by = {sender: SortedList(seqs) for sender, seqs in by_sender.items()}
        c.head, c.ts_last = state.head, state.ts_last
        return c

    @property
    def floor(self) -> int:
        """The oldest retained seq; head + 1 when nothing is retained (spec §8)."""
        if self.events:
            return int(self.events.peekitem(0)[0])
        return self.head + 1

    def append(self, event: Event, retain: int) -> list[Event]:
        """Add the next committed event and drop what falls out of retention.

        Returns:
            The events dropped below the new floor, oldest first.
        """
        self.events[event.seq] = event
        self.head, self.ts_last = event.seq, event.ts
        if event.is_message:
            self.messages.add(event.seq)
            self.sent_by.setdefault(event.sender, SortedList()).add(event.seq)
        dropped = []
        while len(self.events) > retain:
            _, old = self.events.popitem(0)
            dropped.append(old)
            if old.is_message:
                self.messages.remove(old.seq)
                mine = self.sent_by[old.sender]
                mine.remove(old.seq)
                if not mine:
                    del self.sent_by[old.sender]
        return dropped

    def unread(self, user: str, read: int) -> int:
        """Message events after `read` sent by others (spec §3)."""
        total: int = len(self.messages) - self.messages.bisect_right(read)
        mine = self.sent_by.get(user)
        own: int = len(mine) - mine.bisect_right(read) if mine else 0
        return total - own

    def page(
        self, after: int | None, before: int | None, limit: int
    ) -> tuple[tuple[Event, ...], bool]:
        """A sync page (spec §8), ascending, and whether more lie in that direction.

        With `after`: the first `limit` events above it (and below `before`, if given).
        With only `before`: the newest `limit` events below it.
        With neither: the newest `limit` events.
        """
        low = None if after is None else after + 1
        high = None if before is None else before - 1
        if after is not None:
            keys = list(islice(self.events.irange(low, high), limit + 1))
            more = len(keys) > limit
            keys = keys[:limit]
        else:
            keys = list(islice(self.events.irange(low, high, reverse=True), limit + 1))
            more = len(keys) > limit
            keys = keys[:limit][::-1]
        return tuple(self.events[k] for k in keys), more
