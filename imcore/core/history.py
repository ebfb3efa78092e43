"""What lives where: the hot tails' byte budget, and what the core asks of the history store.

Pure: no I/O. Every committed event is kept in the history store on disk (the server's
checkpoint puts it there, off the ack path); memory keeps the newest events of each
conversation, its *tail*, within one byte budget for all tails together. An event leaves
its tail only once it is in the store (`HotTail.stored`), oldest first across the server,
so whatever a tail lacks the store has.

When an answer needs what only the store has (an old page, a cmid the filter cannot rule
out), the core does not read it: it returns a query (`ReadPage`, `FindCmid`), the server
carries it out in a worker thread and hands the answer back to the same call, like a
commit (see `Session.fetched`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conversation import Conversation
    from .frames import Event

#: What an event costs in memory besides its body: the Event object, its strings, the
#: tail and order entries (measured: about 450 bytes with 48-byte bodies).
EVENT_OVERHEAD = 400


def event_size(event: Event) -> int:
    """An estimate of the memory an event of the tail holds (the budget's unit)."""
    body = event.body
    if isinstance(body, str | bytes):
        return EVENT_OVERHEAD + len(body)
    if isinstance(body, dict):
        return EVENT_OVERHEAD + sum(
            len(k) + (len(v) if isinstance(v, str | bytes) else 16)
            for k, v in body.items()
            if isinstance(k, str)
        )
    return EVENT_OVERHEAD + 16


@dataclass(frozen=True, slots=True)
class ReadPage:
    """Read the events `low..high` (inclusive) of `conv` from the store."""

    conv: str
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class FindCmid:
    """Look up the (seq, ts) of the stored event of `conv` that `sender` sent as `cmid`."""

    conv: str
    sender: str
    cmid: str


class NotAsked:
    """The store has not been asked yet (what a send's lookup answer starts as)."""


NOT_ASKED = NotAsked()

StoreQuery = ReadPage | FindCmid
#: A `ReadPage` is answered with the events found (ascending), a `FindCmid` with
#: (seq, ts) or None.
StoreAnswer = list["Event"] | tuple[int, int] | None
#: A page read, as handed back to the core: the query and its answer.
Fetched = tuple[ReadPage, list["Event"]]


class HotTail:
    """The order in which events entered the tails, and the budget they share.

    Args:
        budget: bytes (by `event_size`) all tails may hold; None for no limit (a core
            without a store, as in unit tests).
    """

    __slots__ = ("_order", "budget", "bytes", "hits", "misses", "stored_lsn")

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.bytes = 0
        self.stored_lsn = 0  # the store holds every record up to here
        self._order: deque[tuple[Conversation, int, int, int]] = deque()  # c, seq, lsn, size
        self.hits = 0  # pages served from memory alone
        self.misses = 0  # pages that needed the store

    @property
    def events(self) -> int:
        return len(self._order)

    def added(self, c: Conversation, event: Event, lsn: int) -> list[Event]:
        """`event` (record `lsn`) joined `c`'s tail. Returns the events evicted to keep
        within the budget."""
        if self.budget is None:
            return []
        size = event_size(event)
        self._order.append((c, event.seq, lsn, size))
        self.bytes += size
        return self._evict() if self.bytes > self.budget else []

    def dropped(self, events: list[Event]) -> None:
        """Retention took `events` out of their tail."""
        for e in events:
            self.bytes -= event_size(e)

    def stored(self, lsn: int) -> list[Event]:
        """The store now holds every record up to `lsn`. Returns the events evicted."""
        self.stored_lsn = max(self.stored_lsn, lsn)
        if self.budget is None or self.bytes <= self.budget:
            return []
        return self._evict()

    def _evict(self) -> list[Event]:
        assert self.budget is not None
        order, evicted = self._order, []
        while self.bytes > self.budget and order and order[0][2] <= self.stored_lsn:
            c, seq, _, size = order.popleft()
            if c.tail_first != seq:
                continue  # retention took it already (and its bytes)
            event = c.evict_first()
            if event is not None:
                self.bytes -= size
                evicted.append(event)
        return evicted
