"""What lives where: hot tails within a budget, store queries and their answers, the cmid
filter, unread counts from seq arrays."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from imcore.core import Chat, Codec, Encoding, Fetch, Limits, Session, Submit, Write, auth
from imcore.core.dedup import CmidFilter
from imcore.core.frames import (
    Ack,
    Batch,
    Error,
    Event,
    GroupAdd,
    GroupCreate,
    GroupRemove,
    Pong,
    Send,
    Sync,
)
from imcore.core.history import FindCmid, ReadPage, event_size
from imcore.core.records import FloorRecord
from imcore.core.session import Resend
from tests.helpers.core import SECRET, answer, history, submit, sync_page

DM = "dm:alice:bob"
G = "g:x"
NOW = 1_700_000_000_000


def committed(chat: Chat, outcome: Any, log: list[Event]) -> None:
    """Apply an outcome's record with the next LSN; the record joins `log` (the store)."""
    record = outcome.record
    assert record is not None
    log.append(record)
    chat.apply(record, len(log))


def send(chat: Chat, log: list[Event], user: str, conv: str, cmid: str, body: Any = "x") -> Event:
    outcome = submit(chat, user, "d1", Send(conv=conv, cmid=cmid, body=body))
    committed(chat, outcome, log)
    return log[-1]


def test_events_leave_the_tail_only_once_stored_and_over_budget() -> None:
    log: list[Event] = []
    chat = Chat(Limits(), tail_bytes=0)
    for i in range(5):
        send(chat, log, "alice", DM, f"c{i}")
    assert len(chat.events(DM)) == 5, "nothing is stored yet: the tail keeps it all"
    chat.stored(3)
    assert [e.seq for e in chat.events(DM)] == [4, 5]
    assert chat.tail.bytes == sum(event_size(e) for e in log[3:])
    assert chat.sequencer.find(DM, "alice", "c0") is None  # left the exact index
    assert chat.sequencer.find(DM, "alice", "c4") == (5, 5)


def test_a_page_below_the_tail_is_a_store_query_and_its_answer_makes_the_batch() -> None:
    log: list[Event] = []
    chat = Chat(Limits(), tail_bytes=0)
    for i in range(10):
        send(chat, log, "alice", DM, f"c{i}")
    chat.stored(7)
    query = chat.sync("bob", Sync(conv=DM, after=2, limit=4))
    assert query == ReadPage(DM, 3, 6)
    rows = answer(log, query)
    assert isinstance(rows, list)
    batch = chat.sync("bob", Sync(conv=DM, after=2, limit=4), (query, rows))
    assert isinstance(batch, Batch)
    assert ([e.seq for e in batch.msgs], batch.more, batch.head) == ([3, 4, 5, 6], True, 10)
    # a page that reaches into the tail takes the rest from memory
    query = chat.sync("bob", Sync(conv=DM, before=11, limit=5))
    assert query == ReadPage(DM, 6, 7)
    batch = chat.sync("bob", Sync(conv=DM, before=11, limit=5), (query, answer(log, query)))  # type: ignore[arg-type]
    assert isinstance(batch, Batch)
    assert [e.seq for e in batch.msgs] == [6, 7, 8, 9, 10]
    assert sync_page(chat, "bob", Sync(conv=DM, after=8)).msgs == tuple(log[8:])
    assert (chat.tail.hits, chat.tail.misses) == (1, 2)  # pages from memory alone, not


def test_an_answer_overtaken_by_a_shrinking_tail_is_asked_again() -> None:
    log: list[Event] = []
    chat = Chat(Limits(), tail_bytes=0)
    for i in range(10):
        send(chat, log, "alice", DM, f"c{i}")
    chat.stored(4)
    query = chat.sync("bob", Sync(conv=DM, after=0))
    assert query == ReadPage(DM, 1, 4)
    rows = answer(log, query)
    chat.stored(8)  # the tail shrank while the store was read
    again = chat.sync("bob", Sync(conv=DM, after=0), (query, rows))  # type: ignore[arg-type]
    assert again == ReadPage(DM, 1, 8)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from(["alice", "bob", "sys"]), min_size=1, max_size=60),
    st.integers(0, 10),
    st.lists(
        st.tuples(
            st.none() | st.integers(0, 65), st.none() | st.integers(0, 65), st.integers(1, 20)
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 3),
    st.integers(0, 3000),
)
def test_pages_and_unread_are_the_same_whatever_the_tail_holds(
    actions: list[str],
    lag: int,
    asks: list[tuple[int | None, int | None, int]],
    retain: int,
    budget: int,
) -> None:
    """A chat whose tails keep everything and one with a small budget whose store lags
    `lag` records (its queries answered from the log) give the same pages and unread
    counts, with membership events and retention too."""
    limits = Limits(retain_messages=retain * 7)
    full, lean = Chat(limits), Chat(limits, tail_bytes=budget)
    log: list[Any] = []

    def write(user: str, cmd: Any) -> None:
        outcomes = [submit(chat, user, "d1", cmd) for chat in (full, lean)]
        assert outcomes[0] == outcomes[1]
        for record in [outcomes[0].record, *full.retention_due()]:
            if record is None:
                continue
            log.append(record)
            for chat in (full, lean):
                chat.apply(record, len(log))
            lean.stored(len(log) - lag)

    write("alice", GroupCreate(conv=G, members=("bob",)))
    carol = False
    for i, action in enumerate(actions):
        if action == "sys":
            cmd: Any = (GroupRemove if carol else GroupAdd)(conv=G, users=("carol",))
            carol = not carol
            write("alice", cmd)
        else:
            write(action, Send(conv=G, cmid=f"c{i}", body=i))
    events = [r for r in log if isinstance(r, Event)]
    for after, before, limit in asks:
        cmd = Sync(conv=G, after=after, before=before, limit=limit)
        expected = sync_page(full, "bob", cmd)
        got = lean.sync("bob", cmd)
        if isinstance(got, ReadPage):
            got = lean.sync("bob", cmd, (got, answer(events, got)))  # type: ignore[arg-type]
        assert got == expected
    for user in ("alice", "bob"):
        assert lean.summaries(user) == full.summaries(user)
    assert history(lean, "bob", G, events) == history(full, "bob", G)
    floor = full.floor(G)
    others = [e for e in events if e.seq >= floor and e.sys is None and e.sender != "bob"]
    assert full.summaries("bob")[0].unread == len(others)


def test_the_filter_never_forgets_and_rarely_imagines() -> None:
    f = CmidFilter(first_capacity=1000)  # five filters for these keys
    keys = [(f"dm:u{i % 97}:v", f"u{i % 13}", f"cmid-{i}") for i in range(20_000)]
    for key in keys:
        f.add(*key)
    assert all(f.may_contain(*key) for key in keys)
    rng = random.Random(16)
    strangers = [(f"dm:u{rng.randrange(97)}:v", "u1", f"other-{i}") for i in range(20_000)]
    false_positives = sum(f.may_contain(*key) for key in strangers)
    assert false_positives < 0.006 * len(strangers)
    again = CmidFilter.from_state(f.to_state(), first_capacity=1000)
    assert all(again.may_contain(*key) for key in keys)
    assert again.keys == f.keys == 20_000
    assert f.nbytes < 4 * len(keys)  # a few bytes a cmid (the last filter is half empty)


def opened(chat: Chat, user: str = "alice") -> Session:
    session = Session(
        chat, Codec(Encoding.JSON, chat.limits), secret=SECRET, session_id="s1", now_ms=NOW
    )
    token = auth.mint(user, SECRET, now_ms=NOW)
    session.handle(json.dumps({"op": "hello", "v": 1, "token": token, "device": "d1"}), NOW)
    return session


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def test_a_send_the_filter_cannot_rule_out_waits_for_the_store_and_holds_later_frames() -> None:
    log: list[Event] = []
    chat = Chat(Limits(), tail_bytes=0)
    send(chat, log, "alice", DM, "old")
    chat.stored(1)  # "old" is only in the store (and the filter) now
    session = opened(chat)
    (fetch,) = session.handle(frame(op="send", id=1, conv=DM, cmid="old", body="again"), NOW)
    assert isinstance(fetch, Fetch)
    assert fetch.query == FindCmid(DM, "alice", "old")
    held = session.holding
    assert session.handle(frame(op="send", id=2, conv=DM, cmid="new", body="n"), NOW) == []
    effects = session.fetched(fetch, answer(log, fetch.query), NOW)
    assert (held, session.holding) == (True, False)
    replies = [e.outcome.reply for e in effects if isinstance(e, Submit)]
    assert [(r.id, r.seq, r.dup) for r in replies if isinstance(r, Ack)] == [
        (1, 1, True),
        (2, 2, False),
    ]


def test_a_failed_lookup_refuses_the_send_and_takes_the_held_frames() -> None:
    log: list[Event] = []
    chat = Chat(Limits(), tail_bytes=0)
    send(chat, log, "alice", DM, "old")
    chat.stored(1)
    session = opened(chat)
    (fetch,) = session.handle(frame(op="send", id=1, conv=DM, cmid="old", body="again"), NOW)
    session.handle(frame(op="ping", id=2), NOW)
    assert isinstance(fetch, Fetch)
    effects = session.fetch_failed(fetch, NOW)
    written = [e.frame for e in effects if isinstance(e, Write)]
    assert isinstance(written[0], Error)
    assert (written[0].code, written[0].id) == ("unavailable", 1)
    assert isinstance(written[1], Pong)
    assert not session.holding


def test_a_sync_below_the_tail_does_not_hold_later_frames() -> None:
    log: list[Event] = []
    chat = Chat(Limits(), tail_bytes=0)
    for i in range(5):
        send(chat, log, "alice", DM, f"c{i}")
    chat.stored(5)
    session = opened(chat, "bob")
    (fetch,) = session.handle(frame(op="sync", id=1, conv=DM, after=0), NOW)
    assert isinstance(fetch, Fetch)
    assert not session.holding
    (pong,) = session.handle(frame(op="ping", id=2), NOW)
    assert isinstance(pong, Write)
    (reply,) = session.fetched(fetch, answer(log, fetch.query), NOW)
    assert isinstance(reply, Write)
    assert isinstance(reply.frame, Batch)
    assert [e.seq for e in reply.frame.msgs] == [1, 2, 3, 4, 5]


def test_a_resend_of_pushes_that_left_memory_reads_them_back() -> None:
    log: list[Event] = []
    chat = Chat(Limits(resend_ms=1000), tail_bytes=0)
    session = opened(chat, "bob")
    for i in range(3):
        event = send(chat, log, "alice", DM, f"c{i}")
        session.pushed(DM, event.seq, NOW)
    chat.stored(3)
    effects = session.on_deadline(NOW + 1000)
    fetches = [e for e in effects if isinstance(e, Fetch)]
    assert [f.request for f in fetches] == [Resend(DM, 1)]
    writes = session.fetched(fetches[0], answer(log, fetches[0].query), NOW + 1000)
    assert [e.frame.seq for e in writes if isinstance(e, Write)] == [1, 2, 3]  # type: ignore[union-attr]


def test_floor_records_drop_tail_events_and_their_bytes() -> None:
    log: list[Event] = []
    chat = Chat(Limits(retain_messages=2), tail_bytes=10**9)
    for i in range(5):
        send(chat, log, "alice", DM, f"c{i}")
    (move,) = chat.retention_due()
    chat.apply(move, 6)
    assert move == FloorRecord(DM, 4)
    assert [e.seq for e in chat.events(DM)] == [4, 5]
    assert chat.tail.bytes == sum(event_size(e) for e in log[3:])
    assert chat.summaries("bob")[0].unread == 2
    assert history(chat, "bob", DM, log) == log[3:]
    assert sync_page(chat, "bob", Sync(conv=DM, after=0)).floor == 4
