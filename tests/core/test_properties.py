"""Properties of sequencing and membership under any interleaving of commands and commits."""

from __future__ import annotations

import contextlib
from itertools import pairwise
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from imcore.core import Chat, Limits, Outcome
from imcore.core.errors import ImcoreError
from imcore.core.frames import (
    Ack,
    Event,
    GroupAdd,
    GroupCommand,
    GroupCreate,
    GroupJoin,
    GroupLeave,
    GroupRemove,
    Send,
)
from imcore.core.membership import members_at, recipients
from tests.helpers.core import submit

USERS = ("u0", "u1", "u2", "u3", "u4")
CONVS = ("g:one", "g:two", "dm:u0:u1", "dm:u1:u2")

command = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(USERS), st.sampled_from(CONVS)),
    st.tuples(st.just("join"), st.sampled_from(USERS), st.sampled_from(CONVS[:2])),
    st.tuples(st.just("leave"), st.sampled_from(USERS), st.sampled_from(CONVS[:2])),
    st.tuples(
        st.just("add"),
        st.sampled_from(USERS),
        st.sampled_from(CONVS[:2]),
        st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
    ),
    st.tuples(
        st.just("remove"),
        st.sampled_from(USERS),
        st.sampled_from(CONVS[:2]),
        st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
    ),
)


def chat_with_groups() -> Chat:
    chat = Chat(Limits())
    for conv in CONVS[:2]:
        out = submit(chat, "u0", "d", GroupCreate(conv=conv, members=("u1",), public=True), 0)
        assert out.record is not None
        chat.apply(out.record)
    return chat


def to_frame(cmd: tuple[object, ...], n: int) -> Send | GroupCommand:
    kind, _, conv = cmd[0], cmd[1], str(cmd[2])
    if kind == "send":
        return Send(conv=conv, cmid=f"m{n}", body=n)
    if kind == "join":
        return GroupJoin(conv=conv)
    if kind == "leave":
        return GroupLeave(conv=conv)
    users = tuple(cast("list[str]", cmd[3]))  # st.lists of USERS in `command`
    return (
        GroupAdd(conv=conv, users=users) if kind == "add" else GroupRemove(conv=conv, users=users)
    )


def run(chat: Chat, batches: list[list[tuple[object, ...]]]) -> list[Outcome]:
    """Submit each batch, then apply it: one batch stands for one group commit."""
    done: list[Outcome] = []
    n = 0
    for batch in batches:
        outs = []
        for cmd in batch:
            n += 1
            try:
                outs.append(submit(chat, str(cmd[1]), "d", to_frame(cmd, n), now_ms=n))
            except ImcoreError:
                continue  # refused commands change nothing, which the checks below rely on
        for out in outs:
            if out.record is not None:
                chat.apply(out.record)
        done += outs
    return done


batches = st.lists(st.lists(command, max_size=8), max_size=30)


@settings(max_examples=200, deadline=None)
@given(batches)
def test_seq_gapless_and_ts_increasing_for_any_batching(bs: list[list[tuple[object, ...]]]) -> None:
    chat = chat_with_groups()
    outcomes = run(chat, bs)
    events = [o.record for o in outcomes if isinstance(o.record, Event)]
    assert all(a.ts < b.ts for a, b in pairwise(events))
    acks = [o.reply for o in outcomes if isinstance(o.reply, Ack)]
    for conv in CONVS:
        ack_seqs = [a.seq for a in acks if a.conv == conv]
        assert all(b > a for a, b in pairwise(ack_seqs))
    for conv in CONVS:
        seqs = [e.seq for e in chat.events(conv)]
        assert seqs == list(range(1, len(seqs) + 1))
        assert all(a.ts < b.ts for a, b in pairwise(chat.events(conv)))


@settings(max_examples=200, deadline=None)
@given(batches)
def test_recipients_of_event_n_are_members_after_n_plus_those_it_removed(
    bs: list[list[tuple[object, ...]]],
) -> None:
    """A table kept only by the deltas of each event reaches exactly the log's recipients."""
    chat = Chat(Limits())
    table: dict[str, set[str]] = {}
    pushed: dict[tuple[str, int], set[str]] = {}

    def apply(out: Outcome) -> None:
        assert out.record is not None
        d = chat.apply(out.record)
        assert d is not None
        assert isinstance(d.frame, Event)
        members = table.setdefault(d.conv, set())
        members.update(d.joined)
        pushed[(d.conv, d.frame.seq)] = set(members)
        members.difference_update(d.left)

    for conv in CONVS[:2]:
        apply(submit(chat, "u0", "d", GroupCreate(conv=conv, members=("u1",), public=True), 0))
    n = 0
    for batch in bs:
        outs = []
        for cmd in batch:
            n += 1
            with contextlib.suppress(ImcoreError):
                outs.append(submit(chat, str(cmd[1]), "d", to_frame(cmd, n), now_ms=n))
        for out in outs:
            if out.record is not None:
                apply(out)
    for conv in CONVS[:2]:
        log = chat.events(conv)
        for i, event in enumerate(log):
            changes = [(e.sys, e.sender) for e in log[: i + 1] if e.sys is not None]
            expected = recipients(members_at(changes), event.sys)
            assert pushed[(conv, event.seq)] == expected
        assert chat.members(conv) == members_at([(e.sys, e.sender) for e in log if e.sys])
