from __future__ import annotations

from dataclasses import replace

import pytest

from imcore.core import Audience, Chat, Deliveries, Limits, Outcome
from imcore.core.errors import Conflict, Forbidden, Invalid, Limit, NotFound, Unavailable
from imcore.core.frames import (
    Delivered,
    Event,
    GroupAdd,
    GroupCreate,
    GroupInfo,
    GroupJoin,
    GroupLeave,
    GroupRemove,
    GroupRole,
    Ok,
    Read,
    ReadReceipt,
    Recv,
    Send,
    Sync,
    Typing,
    TypingNotice,
)
from imcore.core.records import CursorRecord, DeliveredRecord, FloorRecord
from tests.helpers.core import commit, do, new_chat, submit, sync_page

DM = "dm:alice:bob"
G = "g:team"


def send(chat: Chat, user: str, conv: str, cmid: str, body: object = "hi", **kw: int) -> Event:
    outcome = do(chat, user, Send(conv=conv, cmid=cmid, body=body, **kw))
    assert isinstance(outcome.record, Event)
    return outcome.record


def peer_positions(chat: Chat, user: str, conv: str) -> tuple[int | None, int | None]:
    """(peer_read, peer_delivered) of `conv` in `user`'s summaries."""
    (summary,) = [s for s in chat.summaries(user) if s.conv == conv]
    return summary.peer_read, summary.peer_delivered


def test_resent_cmid_returns_the_first_ack_and_stores_nothing() -> None:
    chat = Chat(Limits())
    first = submit(chat, "alice", "d1", Send(conv=DM, cmid="c1", body="hi"), now_ms=1_000)
    commit(chat, first)

    again = submit(chat, "alice", "d1", Send(conv=DM, cmid="c1", body="edited"), now_ms=2_000)

    assert again.record is None
    assert again.reply == replace(first.reply, dup=True)  # type: ignore[type-var]
    assert chat.head(DM) == 1


def test_a_retry_while_the_original_is_uncommitted_is_already_a_dup() -> None:
    chat = Chat(Limits())
    first = submit(chat, "alice", "d1", Send(conv=DM, cmid="c1", body="hi"), now_ms=0)
    again = submit(chat, "alice", "d1", Send(conv=DM, cmid="c1", body="hi"), now_ms=0)
    assert again.record is None
    assert again.reply == replace(first.reply, dup=True)  # type: ignore[type-var]


def test_same_cmid_from_another_sender_is_a_new_event() -> None:
    chat = Chat(Limits())
    send(chat, "alice", DM, "c1")
    assert send(chat, "bob", DM, "c1").seq == 2


def test_a_retry_after_removal_is_still_a_dup() -> None:
    chat = Chat(Limits())
    do(chat, "owner", GroupCreate(conv=G, members=("a",)))
    first = do(chat, "a", Send(conv=G, cmid="c", body=1))
    do(chat, "owner", GroupRemove(conv=G, users=("a",)))
    again = submit(chat, "a", "d1", Send(conv=G, cmid="c", body=1), 0)
    assert again.reply == replace(first.reply, dup=True)  # type: ignore[type-var]
    with pytest.raises(Forbidden):
        submit(chat, "a", "d1", Send(conv=G, cmid="new", body=1), 0)


def test_outsider_is_forbidden_and_nothing_changes() -> None:
    chat = Chat(Limits())
    with pytest.raises(Forbidden):
        submit(chat, "carol", "d1", Send(conv=DM, cmid="c1", body="hi"), now_ms=0)
    assert chat.head(DM) == 0
    assert chat.clock.value == 0


def test_unknown_group_is_not_found() -> None:
    with pytest.raises(NotFound):
        Chat(Limits()).submit("alice", "d1", Send(conv=G, cmid="c", body=1), now_ms=0)


def test_uncommitted_events_are_invisible_to_readers() -> None:
    chat = Chat(Limits())
    outcome = submit(chat, "alice", "d1", Send(conv=DM, cmid="c1", body="hi"), now_ms=0)
    assert sync_page(chat, "bob", Sync(conv=DM)).msgs == ()
    assert chat.summaries("bob") == ()
    commit(chat, outcome)
    assert [e.seq for e in sync_page(chat, "bob", Sync(conv=DM)).msgs] == [1]


def test_client_ts_moves_the_clock_forward() -> None:
    chat = Chat(Limits())
    assert send(chat, "alice", DM, "c1", ts=500).ts == 501
    assert send(chat, "alice", DM, "c2", ts=3).ts == 502


def test_client_ts_too_far_ahead_is_invalid() -> None:
    chat = Chat(Limits())
    with pytest.raises(Invalid):
        submit(chat, "alice", "d1", Send(conv=DM, cmid="c", body=1, ts=10**9 + 1), now_ms=0)
    assert chat.clock.value == 0


def test_first_dm_event_makes_both_parties_members() -> None:
    chat = Chat(Limits())
    deliveries = commit(chat, submit(chat, "bob", "d1", Send(conv=DM, cmid="c", body=1), 0))
    assert deliveries is not None
    assert deliveries.joined == ("alice", "bob")
    assert chat.convs_of("alice") == {DM}
    second = commit(chat, submit(chat, "bob", "d1", Send(conv=DM, cmid="d", body=1), 0))
    assert second is not None
    assert second.joined == ()


def test_notes_to_self_has_one_member() -> None:
    chat = Chat(Limits())
    send(chat, "alice", "dm:alice:alice", "n1")
    assert chat.members("dm:alice:alice") == {"alice"}


# --- groups ------------------------------------------------------------------------------------


def make_group(chat: Chat, *members: str, public: bool = False) -> None:
    do(chat, "owner", GroupCreate(conv=G, members=members, public=public, title="Team"))


def test_create_is_one_event_listing_every_initial_member() -> None:
    chat = Chat(Limits())
    out = do(chat, "owner", GroupCreate(conv=G, members=("a", "b")))
    assert out.reply is not None
    assert (out.reply.conv, out.reply.seq) == (G, 1)  # type: ignore[union-attr]
    (event,) = chat.events(G)
    assert event.sys is not None
    assert (event.sys.type, event.sys.users) == ("create", ("owner", "a", "b"))
    assert chat.members(G) == {"owner", "a", "b"}


def test_create_of_an_existing_group_conflicts() -> None:
    chat = Chat(Limits())
    make_group(chat)
    with pytest.raises(Conflict):
        submit(chat, "x", "d", GroupCreate(conv=G), 0)


def test_create_beyond_max_members_is_limit() -> None:
    chat = new_chat(max_group_members=2)
    with pytest.raises(Limit):
        submit(chat, "owner", "d", GroupCreate(conv=G, members=("a", "b")), 0)


def test_add_remove_role_and_leave() -> None:
    chat = Chat(Limits())
    make_group(chat, "a")
    do(chat, "owner", GroupAdd(conv=G, users=("b", "c")))
    do(chat, "owner", GroupRole(conv=G, user="a", role="admin"))
    do(chat, "a", GroupRemove(conv=G, users=("b",)))
    do(chat, "c", GroupLeave(conv=G))
    info = chat.group_info("owner", GroupInfo(conv=G))
    assert info.members == (("a", "admin"), ("owner", "owner"))
    assert [e.sys.type for e in chat.events(G) if e.sys] == [
        "create",
        "add",
        "role",
        "remove",
        "leave",
    ]
    assert chat.convs_of("b") == set()


@pytest.mark.parametrize(
    ("actor", "cmd", "error"),
    [
        ("a", GroupAdd(conv=G, users=("z",)), Forbidden),
        ("owner", GroupAdd(conv=G, users=("a",)), Conflict),
        ("a", GroupRemove(conv=G, users=("b",)), Forbidden),
        ("owner", GroupRemove(conv=G, users=("z",)), NotFound),
        ("adm", GroupRemove(conv=G, users=("owner",)), Forbidden),
        ("adm", GroupRemove(conv=G, users=("adm2",)), Forbidden),
        ("z", GroupJoin(conv=G), Forbidden),
        ("z", GroupLeave(conv=G), Forbidden),
        ("owner", GroupLeave(conv=G), Forbidden),
        ("adm", GroupRole(conv=G, user="a", role="admin"), Forbidden),
        ("owner", GroupRole(conv=G, user="z", role="admin"), NotFound),
        ("owner", GroupRole(conv=G, user="owner", role="member"), Forbidden),
        ("owner", GroupAdd(conv="g:nope", users=("z",)), NotFound),
    ],
)
def test_refused_group_commands_change_nothing(
    actor: str, cmd: GroupAdd, error: type[Exception]
) -> None:
    chat = Chat(Limits())
    make_group(chat, "a", "b", "adm", "adm2")
    do(chat, "owner", GroupRole(conv=G, user="adm", role="admin"))
    do(chat, "owner", GroupRole(conv=G, user="adm2", role="admin"))
    head, clock = chat.head(G), chat.clock.value
    with pytest.raises(error):
        submit(chat, actor, "d", cmd, 0)
    assert (chat.head(G), chat.clock.value) == (head, clock)
    assert chat.sequencer.head(G) == head


def test_join_public_group_and_add_beyond_limit() -> None:
    chat = new_chat(max_group_members=3)
    make_group(chat, "a", public=True)
    do(chat, "z", GroupJoin(conv=G))
    with pytest.raises(Conflict):
        submit(chat, "z", "d", GroupJoin(conv=G), 0)
    with pytest.raises(Limit):
        submit(chat, "owner", "d", GroupAdd(conv=G, users=("y",)), 0)
    with pytest.raises(Limit):
        submit(chat, "y", "d", GroupJoin(conv=G), 0)


def test_a_member_added_but_uncommitted_may_already_send() -> None:
    chat = Chat(Limits())
    make_group(chat)
    add = submit(chat, "owner", "d", GroupAdd(conv=G, users=("a",)), 0)
    msg = submit(chat, "a", "d", Send(conv=G, cmid="c", body=1), 0)
    assert chat.members(G) == {"owner"}  # readers see only committed membership
    commit(chat, add)
    commit(chat, msg)
    assert [e.seq for e in chat.events(G)] == [1, 2, 3]


def test_removed_member_gets_the_removal_then_leaves_the_table() -> None:
    chat = Chat(Limits())
    make_group(chat, "a")
    out = submit(chat, "owner", "d", GroupRemove(conv=G, users=("a",)), 0)
    deliveries = commit(chat, out)
    assert deliveries is not None
    assert (deliveries.joined, deliveries.left) == ((), ("a",))
    with pytest.raises(Forbidden):
        sync_page(chat, "a", Sync(conv=G))


def test_group_info_of_private_group_is_for_members() -> None:
    chat = Chat(Limits())
    make_group(chat, "a")
    with pytest.raises(Forbidden):
        chat.group_info("z", GroupInfo(conv=G))
    with pytest.raises(NotFound):
        chat.group_info("z", GroupInfo(conv="g:other"))


def test_owner_alone_may_leave() -> None:
    chat = Chat(Limits())
    make_group(chat, public=True)
    do(chat, "owner", GroupLeave(conv=G))
    assert chat.group_info("z", GroupInfo(conv=G)).owner is None


# --- sync, retention, cursors ------------------------------------------------------------------


def test_sync_pages_in_every_direction() -> None:
    chat = Chat(Limits())
    for i in range(10):
        send(chat, "alice", DM, f"c{i}")

    def page(**kw: int) -> tuple[list[int], bool]:
        batch = sync_page(chat, "bob", Sync(conv=DM, **kw))
        return [e.seq for e in batch.msgs], batch.more

    assert page(after=2, limit=3) == ([3, 4, 5], True)
    assert page(after=7, limit=3) == ([8, 9, 10], False)
    assert page(before=5, limit=3) == ([2, 3, 4], True)
    assert page(before=4, limit=3) == ([1, 2, 3], False)
    assert page(after=2, before=6, limit=2) == ([3, 4], True)
    assert page(after=2, before=6, limit=3) == ([3, 4, 5], False)
    assert page(limit=2) == ([9, 10], True)


def test_sync_limit_is_clamped() -> None:
    chat = new_chat(sync_limit_max=3)
    for i in range(5):
        send(chat, "alice", DM, f"c{i}")
    assert len(sync_page(chat, "bob", Sync(conv=DM, after=0, limit=1000)).msgs) == 3


def test_retention_moves_the_floor_and_forgets_old_cmids() -> None:
    chat = new_chat(retain_messages=3)
    for i in range(5):
        send(chat, "alice", DM, f"c{i}")
    assert sync_page(chat, "bob", Sync(conv=DM, after=0)).msgs[0].seq == 1  # not yet swept
    (floor,) = chat.retention_due()
    assert floor == FloorRecord(DM, 3)
    chat.apply(floor)
    assert chat.retention_due() == []
    batch = sync_page(chat, "bob", Sync(conv=DM, after=0))
    assert ([e.seq for e in batch.msgs], batch.floor, batch.head) == ([3, 4, 5], 3, 5)
    assert chat.sequencer.find(DM, "alice", "c0") is None
    assert chat.sequencer.find(DM, "alice", "c4") == (5, 5)
    assert chat.summaries("bob")[0].unread == 3


def test_unread_counts_messages_by_others_after_the_read_cursor() -> None:
    chat = Chat(Limits())
    make_group(chat, "a")
    send(chat, "owner", G, "1")
    send(chat, "a", G, "2")
    send(chat, "owner", G, "3")
    do(chat, "owner", GroupAdd(conv=G, users=("b",)))
    (summary,) = chat.summaries("a")
    assert (summary.head, summary.read, summary.unread) == (5, 0, 2)
    do(chat, "a", Read(conv=G, seq=3))
    (summary,) = chat.summaries("a")
    assert (summary.read, summary.unread, summary.floor) == (3, 1, 1)
    do(chat, "a", Read(conv=G, seq=5))
    assert chat.summaries("a")[0].unread == 0


def test_a_new_members_unread_count_starts_at_its_joining() -> None:
    chat = Chat(Limits())
    make_group(chat, public=True)
    send(chat, "owner", G, "before")
    do(chat, "z", GroupJoin(conv=G))
    send(chat, "owner", G, "after")
    (summary,) = chat.summaries("z")
    assert (summary.read, summary.unread) == (2, 1)


def test_read_cursor_only_moves_forward_and_pushes_a_receipt() -> None:
    chat = Chat(Limits())
    for i in range(3):
        send(chat, "alice", DM, f"c{i}")
    out = submit(chat, "bob", "phone", Read(conv=DM, seq=2, id=4), 0)
    assert out.record == CursorRecord(DM, "bob", "phone", 2)
    deliveries = commit(chat, out)
    assert deliveries is not None
    assert deliveries.frame == ReadReceipt(conv=DM, user="bob", seq=2)
    assert deliveries.audience == Audience(exclude_device=("bob", "phone"))
    assert submit(chat, "bob", "phone", Read(conv=DM, seq=1), 0).record is None
    with pytest.raises(Invalid):
        submit(chat, "bob", "phone", Read(conv=DM, seq=4), 0)


def test_read_receipts_in_big_groups_go_only_to_the_readers_devices() -> None:
    chat = new_chat(receipt_fanout_max=2)
    make_group(chat, "a", "b")
    out = commit(chat, submit(chat, "a", "d", Read(conv=G, seq=1), 0))
    assert out is not None
    assert out.audience == Audience(users=frozenset({"a"}), exclude_device=("a", "d"))


def test_a_recv_moves_the_delivered_cursor_only_through_its_committed_record() -> None:
    chat = Chat(Limits())
    for i in range(3):
        send(chat, "alice", DM, f"c{i}")
    out = chat.receive("bob", "phone", Recv(conv=DM, seq=2, id=5))
    assert out == Outcome(Ok(id=5), DeliveredRecord(DM, "bob", "phone", 2))
    assert peer_positions(chat, "alice", DM) == (0, 0)  # sequenced, not yet committed
    deliveries = commit(chat, out)
    assert deliveries == Deliveries(
        DM, Delivered(conv=DM, user="bob", seq=2), Audience(users=frozenset({"alice"}))
    )
    assert peer_positions(chat, "alice", DM) == (0, 2)
    # the same record again (a replay over a snapshot that holds it) pushes nothing
    assert chat.apply(DeliveredRecord(DM, "bob", "laptop", 2)) is None
    assert chat.apply(DeliveredRecord(DM, "bob", "laptop", 1)) is None
    assert peer_positions(chat, "alice", DM) == (0, 2)


def test_a_recv_that_does_not_move_the_staged_cursor_makes_no_record() -> None:
    chat = Chat(Limits())
    for i in range(3):
        send(chat, "alice", DM, f"c{i}")
    first = chat.receive("bob", "phone", Recv(conv=DM, seq=3))
    assert first is not None
    assert first.record == DeliveredRecord(DM, "bob", "phone", 3)
    # Still in flight: the staged cursor is at 3, so these make no record. One with an id
    # still gets an outcome, so that its ok waits behind the commit in flight.
    assert chat.receive("bob", "phone", Recv(conv=DM, seq=3)) is None
    assert chat.receive("bob", "laptop", Recv(conv=DM, seq=2)) is None
    assert chat.receive("bob", "phone", Recv(conv=DM, seq=1, id=9)) == Outcome(Ok(id=9))
    commit(chat, first)
    assert chat.receive("bob", "phone", Recv(conv=DM, seq=3)) is None
    # the peer's cursor is its own
    moved = chat.receive("alice", "d1", Recv(conv=DM, seq=1))
    assert moved is not None
    assert moved.record == DeliveredRecord(DM, "alice", "d1", 1)


def test_recv_in_a_group_or_notes_to_self_moves_nothing_durable() -> None:
    chat = Chat(Limits())
    make_group(chat, "a")
    send(chat, "a", G, "x")
    send(chat, "alice", "dm:alice:alice", "note")
    assert chat.receive("a", "d1", Recv(conv=G, seq=2, id=1)) is None
    assert chat.receive("alice", "d1", Recv(conv="dm:alice:alice", seq=1, id=2)) is None
    assert chat.cursors.delivered_all(G) == {}


def test_a_refused_recv_changes_nothing() -> None:
    chat = Chat(Limits())
    send(chat, "alice", DM, "c0")
    with pytest.raises(Invalid):
        chat.receive("bob", "phone", Recv(conv=DM, seq=2))
    with pytest.raises(Forbidden):
        chat.receive("carol", "phone", Recv(conv=DM, seq=1))
    with pytest.raises(NotFound):
        chat.receive("bob", "phone", Recv(conv="g:none", seq=1))
    out = chat.receive("bob", "phone", Recv(conv=DM, seq=1))
    assert out is not None
    assert out.record == DeliveredRecord(DM, "bob", "phone", 1)


def test_summaries_carry_the_peers_read_and_delivered_positions_in_dms_only() -> None:
    chat = Chat(Limits())
    for i in range(4):
        send(chat, "alice", DM, f"c{i}")
    make_group(chat, "alice")
    send(chat, "alice", "dm:alice:alice", "note")
    summary = {s.conv: s for s in chat.summaries("alice")}
    wire = summary[DM].to_wire()
    assert (wire["peer_read"], wire["peer_delivered"]) == (0, 0)
    commit(chat, submit(chat, "bob", "phone", Read(conv=DM, seq=2), 0))
    out = chat.receive("bob", "phone", Recv(conv=DM, seq=4))
    assert out is not None
    commit(chat, out)
    commit(chat, submit(chat, "alice", "d1", Read(conv=DM, seq=4), 0))
    summary = {s.conv: s for s in chat.summaries("alice")}
    assert (summary[DM].peer_read, summary[DM].peer_delivered) == (2, 4)
    assert (summary[DM].read, summary[DM].unread) == (4, 0)
    assert peer_positions(chat, "bob", DM) == (4, 0)  # alice read; she never sent recv
    assert (summary[G].peer_read, summary[G].peer_delivered) == (None, None)
    assert "peer_read" not in summary[G].to_wire()
    assert "peer_delivered" not in summary[G].to_wire()
    notes = summary["dm:alice:alice"].to_wire()
    assert (notes["peer_read"], notes["peer_delivered"]) == (0, 0)


def test_typing_is_limited_to_once_a_second_and_never_stored() -> None:
    chat = Chat(Limits())
    send(chat, "alice", DM, "c0")
    assert chat.typing("alice", Typing(conv=DM), now_ms=10_000) is not None
    assert chat.typing("alice", Typing(conv=DM), now_ms=10_500) is None
    assert chat.typing("alice", Typing(conv=DM), now_ms=11_000) is not None
    assert chat.head(DM) == 1


def test_typing_in_a_dm_is_addressed_to_the_peer_even_before_its_first_message() -> None:
    chat = Chat(Limits())
    out = chat.typing("alice", Typing(conv=DM), now_ms=0)
    assert out is not None
    assert out.frame == TypingNotice(conv=DM, user="alice")
    assert out.audience == Audience(users=frozenset({"bob"}))  # not the DM's route
    send(chat, "alice", DM, "c0")
    again = chat.typing("bob", Typing(conv=DM), now_ms=0)
    assert again is not None
    assert again.audience == Audience(users=frozenset({"alice"}))
    assert chat.typing("alice", Typing(conv="dm:alice:alice"), now_ms=0) is None
    assert chat.head(DM) == 1


def test_typing_in_a_group_goes_to_its_members_but_the_typist() -> None:
    chat = Chat(Limits())
    make_group(chat, "a", "b")
    out = chat.typing("b", Typing(conv=G), now_ms=0)
    assert out is not None
    assert out.audience == Audience(exclude_user="b")


def test_commit_failure_makes_the_chat_read_only() -> None:
    chat = Chat(Limits())
    send(chat, "alice", DM, "c0")
    submit(chat, "alice", "d1", Send(conv=DM, cmid="c1", body=1, id=3), 0)
    chat.commit_failed()
    with pytest.raises(Unavailable):
        submit(chat, "alice", "d1", Send(conv=DM, cmid="c2", body=1), 0)
    assert [e.seq for e in sync_page(chat, "bob", Sync(conv=DM)).msgs] == [1]
