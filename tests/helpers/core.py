"""Shorthands for driving the core in tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imcore.core import Chat, Deliveries, Limits, Outcome
from imcore.core.frames import Batch, Sync
from imcore.core.history import ReadPage

if TYPE_CHECKING:
    from collections.abc import Iterable

    from imcore.core import Event
    from imcore.core.frames import GroupCommand, Read, Send
    from imcore.core.history import StoreAnswer, StoreQuery

SECRET = "test-secret-that-is-long-enough-for-hs256"


def commit(chat: Chat, outcome: Outcome) -> Deliveries | None:
    """Apply an outcome's record at once, as a commit that always succeeds."""
    assert outcome.record is not None
    return chat.apply(outcome.record)


def do(
    chat: Chat, user: str, cmd: Send | Read | GroupCommand, now_ms: int = 0, device: str = "d1"
) -> Outcome:
    """Submit and commit one write."""
    outcome = chat.submit(user, device, cmd, now_ms)
    assert isinstance(outcome, Outcome)
    if outcome.record is not None:
        chat.apply(outcome.record)
    return outcome


def new_chat(**limits: int) -> Chat:
    return Chat(Limits(**limits))


def answer(events: Iterable[Event], query: StoreQuery) -> StoreAnswer:
    """What a store holding `events` answers to `query`."""
    if isinstance(query, ReadPage):
        return [e for e in events if e.conv == query.conv and query.low <= e.seq <= query.high]
    for e in events:
        if (e.conv, e.sender, e.cmid) == (query.conv, query.sender, query.cmid):
            return (e.seq, e.ts)
    return None


def history(chat: Chat, user: str, conv: str, stored: Iterable[Event] = ()) -> list[Event]:
    """Every retained event of `conv` as `user` syncs it, page after page, with `stored`
    as the history store."""
    events = list(stored)
    found: list[Event] = []
    after = 0
    while True:
        page = chat.sync(user, Sync(conv=conv, after=after, limit=1000))
        if isinstance(page, ReadPage):
            rows = answer(events, page)
            assert isinstance(rows, list)
            page = chat.sync(user, Sync(conv=conv, after=after, limit=1000), (page, rows))
        assert isinstance(page, Batch)
        found += page.msgs
        if not page.more:
            return found
        after = page.msgs[-1].seq


def submit(
    chat: Chat, user: str, device: str, cmd: Send | Read | GroupCommand, now_ms: int = 0
) -> Outcome:
    """`Chat.submit` where no store is involved (every cmid is still in memory)."""
    outcome = chat.submit(user, device, cmd, now_ms)
    assert isinstance(outcome, Outcome), outcome
    return outcome


def sync_page(chat: Chat, user: str, cmd: Sync) -> Batch:
    """`Chat.sync` where every event is in memory (no store involved)."""
    page = chat.sync(user, cmd)
    assert isinstance(page, Batch), page
    return page
