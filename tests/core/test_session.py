from __future__ import annotations

import json
from typing import Any

import pytest

from imcore.core import (
    Chat,
    Close,
    CloseCode,
    Codec,
    Drop,
    Encoding,
    Limits,
    Opened,
    Outcome,
    Publish,
    SendPing,
    Session,
    SessionState,
    Submit,
    Write,
    auth,
    refusal,
)
from imcore.core.frames import Ack, Error, Event, Ok, Pong, Presence, Welcome
from imcore.core.records import DeliveredRecord
from tests.helpers.core import SECRET

NOW = 1_700_000_000_000


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def hello(user: str = "alice", device: str = "d1", **extra: Any) -> str:
    token = auth.mint(user, SECRET, now_ms=NOW)
    return frame(op="hello", id=1, v=1, token=token, device=device, **extra)


def new_session(chat: Chat, sid: str = "s1") -> Session:
    return Session(
        chat, Codec(Encoding.JSON, chat.limits), secret=SECRET, session_id=sid, now_ms=NOW
    )


def opened(chat: Chat, user: str = "alice", device: str = "d1", sid: str = "s1") -> Session:
    session = new_session(chat, sid)
    effects = session.handle(hello(user, device), NOW)
    assert isinstance(effects[1], Write)
    assert isinstance(effects[1].frame, Welcome)
    return session


def errors(effects: list[Any]) -> list[str]:
    return [e.frame.code for e in effects if isinstance(e, Write) and isinstance(e.frame, Error)]


def test_hello_opens_the_session_and_welcomes() -> None:
    chat = Chat(Limits())
    session = new_session(chat)
    effects = session.handle(hello(seen_ts=40), NOW)
    assert effects[0] == Opened(replaced=None)
    welcome = effects[1].frame  # type: ignore[union-attr]
    assert isinstance(welcome, Welcome)
    assert (welcome.user, welcome.device, welcome.session, welcome.ts) == ("alice", "d1", "s1", 40)
    assert welcome.limits["max_body"] == 65536
    assert session.state is SessionState.OPEN


def test_frames_before_hello_are_unauthorized_but_keep_the_connection() -> None:
    session = new_session(Chat(Limits()))
    effects = session.handle(frame(op="ping", id=5), NOW)
    assert effects == [Write(Error(code="unauthorized", message="say hello first", id=5))]


@pytest.mark.parametrize(
    "token",
    [
        auth.mint("alice", "another-secret-of-sufficient-length!!", now_ms=NOW),
        auth.mint("alice", SECRET, now_ms=NOW - 7200_000),
        auth.mint("not valid!", SECRET, now_ms=NOW),
        "not.a.jwt",
    ],
    ids=["wrong-secret", "expired", "bad-sub", "garbage"],
)
def test_a_bad_token_is_unauthorized_and_closes_4001(token: str) -> None:
    session = new_session(Chat(Limits()))
    effects = session.handle(frame(op="hello", id=1, v=1, token=token, device="d"), NOW)
    assert errors(effects) == ["unauthorized"]
    assert effects[-1] == Close(CloseCode.UNAUTHORIZED, "unauthorized")
    assert session.state is SessionState.CLOSING


@pytest.mark.parametrize(
    "data",
    [frame(op="sync", id=5), frame(op="nonsense", id=5), frame(op="send", id=5, body="x" * 70000)],
    ids=["bad-fields", "unknown-op", "too-large"],
)
def test_before_hello_any_other_op_is_unauthorized_whatever_its_fields(data: str) -> None:
    session = new_session(Chat(Limits()))
    assert session.handle(data, NOW) == [
        Write(Error(code="unauthorized", message="say hello first", id=5))
    ]


@pytest.mark.parametrize("token", ["", 42, "x" * 9000])
def test_a_malformed_token_is_unauthorized_and_closes_4001(token: object) -> None:
    session = new_session(Chat(Limits()))
    effects = session.handle(frame(op="hello", id=1, v=1, token=token, device="d"), NOW)
    assert errors(effects) == ["unauthorized"]
    assert effects[-1] == Close(CloseCode.UNAUTHORIZED, "unauthorized")


def test_after_a_close_is_decided_nothing_more_is_handled() -> None:
    chat = Chat(Limits())
    session = new_session(chat)
    bad = auth.mint("alice", SECRET, now_ms=NOW - 7200_000)
    session.handle(frame(op="hello", id=1, v=1, token=bad, device="d"), NOW)
    assert session.state is SessionState.CLOSING
    assert session.handle(hello(), NOW) == []
    assert not chat.presence.online("alice")


def test_the_hello_timeout_closes_only_a_session_that_did_not_say_hello() -> None:
    chat = Chat(Limits(hello_timeout_ms=10_000, heartbeat_ms=60_000))
    polite = opened(chat)
    assert polite.next_deadline_ms() == NOW + 60_000  # the heartbeat; no hello deadline
    assert polite.on_deadline(NOW + 10_000) == []
    silent = new_session(chat, "s2")
    assert silent.next_deadline_ms() == NOW + 10_000
    assert silent.on_deadline(NOW + 9_999) == []
    assert silent.on_deadline(NOW + 10_000) == [Close(CloseCode.UNAUTHORIZED, "no hello in time")]
    assert silent.handle(hello(), NOW) == []


def test_a_failed_commit_is_refused_with_unavailable() -> None:
    chat = Chat(Limits())
    session = opened(chat)
    (submit,) = session.handle(frame(op="send", id=9, conv="dm:a:alice", cmid="c", body=1), NOW)
    assert isinstance(submit, Submit)
    answer = refusal(submit.outcome)
    assert isinstance(answer, Error)
    assert (answer.code, answer.id) == ("unavailable", 9)


def test_a_close_leaves_presence_at_once_and_drops_the_socket_after_the_close_timeout() -> None:
    chat = Chat(Limits(close_timeout_ms=30_000, heartbeat_ms=1000))
    watcher = opened(chat, "carol", sid="w")
    watcher.handle(frame(op="watch", id=1, users=["alice"]), NOW)
    alice = opened(chat, sid="a1")
    effects = alice.close(CloseCode.SLOW_CONSUMER, "slow consumer", NOW + 5)
    assert [type(e) for e in effects] == [Publish, Close]
    assert effects[-1] == Close(CloseCode.SLOW_CONSUMER, "slow consumer")
    assert not chat.presence.online("alice")
    assert alice.close(CloseCode.TIMEOUT, "again", NOW + 6) == []  # one close
    assert alice.next_deadline_ms() == NOW + 30_005  # no heartbeat or resend any more
    assert alice.on_deadline(NOW + 30_004) == []
    assert alice.on_deadline(NOW + 30_005) == [Drop()]
    assert alice.ended(NOW + 30_010) == []  # left presence already: no second push
    assert alice.next_deadline_ms() is None


def test_a_replaced_session_closing_does_not_take_its_user_offline() -> None:
    chat = Chat(Limits())
    watcher = opened(chat, "carol", sid="w")
    watcher.handle(frame(op="watch", id=1, users=["alice"]), NOW)
    old = opened(chat, sid="old")
    new = new_session(chat, "new")
    (replaced, *_) = new.handle(hello(), NOW + 1)
    assert replaced == Opened("old")
    assert old.close(CloseCode.REPLACED, "replaced", NOW + 2) == [
        Close(CloseCode.REPLACED, "replaced")
    ]
    assert chat.presence.online("alice")


def test_a_second_hello_is_invalid() -> None:
    session = opened(Chat(Limits()))
    assert errors(session.handle(hello(), NOW)) == ["invalid"]


def test_the_same_device_replaces_and_too_many_devices_is_limit_4029() -> None:
    chat = Chat(Limits(max_devices=2))
    opened(chat, device="a", sid="s1")
    opened(chat, device="b", sid="s2")
    again = new_session(chat, "s3").handle(hello(device="a"), NOW)
    assert again[0] == Opened(replaced="s1")
    third = new_session(chat, "s4").handle(hello(device="c"), NOW)
    assert errors(third) == ["limit"]
    assert third[-1] == Close(CloseCode.LIMIT, "too many devices")


def test_send_becomes_a_submit_with_its_ack() -> None:
    session = opened(Chat(Limits()))
    (effect,) = session.handle(frame(op="send", id=2, conv="dm:alice:bob", cmid="c", body=1), NOW)
    assert isinstance(effect, Submit)
    assert effect.outcome.reply == Ack(conv="dm:alice:bob", cmid="c", seq=1, ts=1, id=2)


def test_sends_beyond_the_burst_are_rate_limited_with_a_wait() -> None:
    session = opened(Chat(Limits(send_rate=10, send_burst=3)))
    sends = [
        session.handle(frame(op="send", id=i, conv="dm:a:alice", cmid=f"c{i}", body=1), NOW)
        for i in range(4)
    ]
    assert all(isinstance(e[0], Submit) for e in sends[:3])
    (refusal,) = sends[3]
    assert isinstance(refusal, Write)
    assert isinstance(refusal.frame, Error)
    assert (refusal.frame.code, refusal.frame.retry_ms, refusal.frame.id) == (
        "rate_limited",
        100,
        3,
    )
    later = session.handle(frame(op="send", conv="dm:a:alice", cmid="c9", body=1), NOW + 100)
    assert isinstance(later[0], Submit)


def test_more_than_the_allowed_bad_frames_a_minute_closes_4002() -> None:
    session = opened(Chat(Limits(abuse_errors=3)))
    for _ in range(3):
        assert Close not in {type(e) for e in session.handle("nonsense", NOW)}
    assert session.handle("nonsense", NOW)[-1] == Close(CloseCode.ABUSE, "too many bad frames")
    # errors older than a minute no longer count
    fresh = opened(Chat(Limits(abuse_errors=3)))
    for i in range(6):
        effects = fresh.handle(frame(op="nope"), NOW + i * 30_000)
        assert errors(effects) == ["unknown_op"]
        assert effects[-1] != Close(CloseCode.ABUSE, "too many bad frames")


def test_ping_is_answered_with_the_clock() -> None:
    session = opened(Chat(Limits()))
    assert session.handle(frame(op="ping", id="p"), NOW) == [Write(Pong(ts=0, id="p"))]


def test_watch_reports_presence_and_changes_are_published_to_watchers() -> None:
    chat = Chat(Limits())
    watcher = opened(chat, "carol", sid="w")
    effects = watcher.handle(frame(op="watch", id=1, users=["alice"]), NOW)
    assert effects[0] == Write(Presence(user="alice", online=False, last_seen=None))
    alice = new_session(chat, "a1")
    came = alice.handle(hello(), NOW + 5)
    (publish,) = [e for e in came if isinstance(e, Publish)]
    assert publish.deliveries.frame == Presence(user="alice", online=True, last_seen=NOW + 5)
    assert publish.deliveries.audience.sessions == frozenset({"w"})
    (gone,) = alice.ended(NOW + 9)
    assert isinstance(gone, Publish)
    assert gone.deliveries.frame == Presence(user="alice", online=False, last_seen=NOW + 9)


def test_an_empty_ok_follows_fire_and_forget_frames_only_when_they_carry_an_id() -> None:
    chat = Chat(Limits())
    session = opened(chat)
    assert session.handle(frame(op="typing", conv="dm:alice:bob"), NOW) != []
    assert session.handle(frame(op="unwatch", users=["x"]), NOW) == []
    assert errors(session.handle(frame(op="read", id=3, conv="g:none", seq=1), NOW)) == [
        "not_found"
    ]


def test_heartbeats_ping_and_three_silent_ones_close_4000() -> None:
    chat = Chat(Limits(heartbeat_ms=1000))
    session = opened(chat)
    assert session.next_deadline_ms() == NOW + 1000
    assert session.on_deadline(NOW + 999) == []
    assert session.on_deadline(NOW + 1000) == [SendPing()]
    assert session.on_deadline(NOW + 2000) == [SendPing()]
    session.heard(NOW + 1500)  # a pong
    assert session.on_deadline(NOW + 3000) == [SendPing()]
    assert session.on_deadline(NOW + 4000) == [SendPing()]
    assert session.on_deadline(NOW + 5000) == [Close(CloseCode.TIMEOUT, "no sign of life")]
    assert session.on_deadline(NOW + 6000) == []


def test_any_frame_counts_as_a_sign_of_life() -> None:
    session = opened(Chat(Limits(heartbeat_ms=1000)))
    session.handle(frame(op="ping"), NOW + 2900)
    for beat in (1000, 2000, 3000, 4000):
        assert session.on_deadline(NOW + beat) == [SendPing()]
    assert session.on_deadline(NOW + 5000) == [SendPing()]


def test_resend_schedule_doubles_and_recv_covers() -> None:
    chat = Chat(Limits(resend_ms=1000, resend_max=2))
    alice = opened(chat)
    bob = opened(chat, "bob", sid="s2")
    (submit,) = alice.handle(frame(op="send", conv="dm:alice:bob", cmid="c", body=1), NOW)
    assert isinstance(submit, Submit)
    assert submit.outcome.record is not None
    chat.apply(submit.outcome.record)
    assert bob.pushed("dm:alice:bob", 1, NOW)
    assert not bob.pushed("dm:alice:bob", 1, NOW)  # one entry per conversation
    assert bob.next_deadline_ms() == NOW + 1000
    assert bob.on_deadline(NOW + 999) == []
    (again,) = bob.on_deadline(NOW + 1000)
    assert isinstance(again, Write)
    assert again.frame == chat.events("dm:alice:bob")[0]
    assert bob.next_deadline_ms() == NOW + 3000
    assert len(bob.on_deadline(NOW + 3000)) == 1
    assert bob.on_deadline(NOW + 7000) == [
        Close(CloseCode.TIMEOUT, "pushes were never acknowledged")
    ]


def test_a_dm_recv_is_submitted_and_stops_resends_before_its_commit() -> None:
    chat = Chat(Limits(resend_ms=1000))
    alice, bob = opened(chat), opened(chat, "bob", sid="s2")
    for cmid in ("a", "b"):
        (submit,) = alice.handle(frame(op="send", conv="dm:alice:bob", cmid=cmid, body=1), NOW)
        assert isinstance(submit, Submit)
        assert submit.outcome.record is not None
        chat.apply(submit.outcome.record)
    bob.pushed("dm:alice:bob", 1, NOW)
    effects = bob.handle(frame(op="recv", id=7, conv="dm:alice:bob", seq=2), NOW + 10)
    # no push and no ok yet: both come from the commit of the record
    assert effects == [Submit(Outcome(Ok(id=7), DeliveredRecord("dm:alice:bob", "bob", "d1", 2)))]
    assert bob.next_deadline_ms() == NOW + Limits().heartbeat_ms  # no resend: done at recv
    again = bob.handle(frame(op="recv", id=8, conv="dm:alice:bob", seq=2), NOW + 20)
    assert again == [Submit(Outcome(Ok(id=8)))]
    assert bob.handle(frame(op="recv", conv="dm:alice:bob", seq=1), NOW + 30) == []


def test_a_group_recv_is_answered_at_once_and_commits_nothing() -> None:
    chat = Chat(Limits())
    alice = opened(chat)
    (submit,) = alice.handle(frame(op="group.create", id=2, conv="g:x"), NOW)
    assert isinstance(submit, Submit)
    assert submit.outcome.record is not None
    chat.apply(submit.outcome.record)
    assert alice.handle(frame(op="recv", id=3, conv="g:x", seq=1), NOW) == [Write(Ok(id=3))]


def test_recv_up_to_the_head_clears_the_resend() -> None:
    chat = Chat(Limits(resend_ms=1000))
    alice, bob = opened(chat), opened(chat, "bob", sid="s2")
    (submit,) = alice.handle(frame(op="send", conv="dm:alice:bob", cmid="c", body=1), NOW)
    assert isinstance(submit, Submit)
    assert submit.outcome.record is not None
    chat.apply(submit.outcome.record)
    bob.pushed("dm:alice:bob", 1, NOW)
    bob.handle(frame(op="recv", conv="dm:alice:bob", seq=1), NOW + 10)
    assert bob.next_deadline_ms() == NOW + Limits().heartbeat_ms  # no resend deadline
    assert bob.on_deadline(NOW + 10_000) == []


def test_a_recv_that_covers_part_of_the_pushes_leaves_a_resend_of_the_rest() -> None:
    chat = Chat(Limits(resend_ms=1000))
    alice, bob = opened(chat), opened(chat, "bob", sid="s2")
    for cmid in ("c1", "c2", "c3"):
        (submit,) = alice.handle(frame(op="send", conv="dm:alice:bob", cmid=cmid, body=1), NOW)
        assert isinstance(submit, Submit)
        assert submit.outcome.record is not None
        chat.apply(submit.outcome.record)
    bob.pushed("dm:alice:bob", 1, NOW)
    bob.handle(frame(op="recv", conv="dm:alice:bob", seq=1), NOW + 500)
    assert bob.next_deadline_ms() == NOW + 1500  # a fresh deadline for what is left
    resent = bob.on_deadline(NOW + 1500)
    assert [e.frame.seq for e in resent if isinstance(e, Write) and isinstance(e.frame, Event)] == [
        2,
        3,
    ]
