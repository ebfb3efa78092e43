from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from imcore.core import Chat, Event, Limits, Outcome
from imcore.core.frames import GroupAdd, GroupCreate, GroupRemove, Read, Recv, Send
from imcore.core.recovery import recover
from imcore.core.snapshot import Snapshot, SnapshotEncoder, SnapshotError, decode
from imcore.core.wal_format import SEGMENT_MAGIC, Corrupt, encode_record
from tests.helpers.core import history, submit

if TYPE_CHECKING:
    from imcore.core.records import Record

DM = "dm:alice:bob"


def workload(chat: Chat) -> list[Record]:
    """A mixed history; returns the records in commit order."""
    records: list[Record] = []

    def do(user: str, cmd: object) -> Outcome:
        out = submit(chat, user, "d", cmd, now_ms=len(records))  # type: ignore[arg-type]
        assert isinstance(out, Outcome)
        if out.record is not None:
            chat.apply(out.record)
            records.append(out.record)
        return out

    do("alice", Send(conv=DM, cmid="m1", body="hi"))
    do("bob", Send(conv=DM, cmid="m2", body={"re": "hi"}))
    do("alice", GroupCreate(conv="g:x", members=("bob",), title="X", public=True))
    do("alice", GroupAdd(conv="g:x", users=("carol",)))
    do("carol", Send(conv="g:x", cmid="c1", body=1))
    do("bob", Read(conv=DM, seq=2))
    do("alice", GroupRemove(conv="g:x", users=("bob",)))
    for i in range(5):
        do("alice", Send(conv=DM, cmid=f"n{i}", body=i))
    return records


def same_state(a: Chat, b: Chat, records: list[Record] | None = None) -> None:
    """Same live state, and the same history when `records` (all of them) is the store."""
    stored = [r for r in records or () if isinstance(r, Event)]
    for conv in (DM, "g:x"):
        assert history(a, "alice", conv, stored) == history(b, "alice", conv, stored)
        assert a.head(conv) == b.head(conv)
        assert a.members(conv) == b.members(conv)
        assert a.floor(conv) == b.floor(conv)
    for user in ("alice", "bob", "carol"):
        assert a.summaries(user) == b.summaries(user)
        assert a.convs_of(user) == b.convs_of(user)
    assert a.clock.value == b.clock.value


def log_of(records: list[Record], first_lsn: int = 1) -> bytes:
    return SEGMENT_MAGIC + b"".join(encode_record(first_lsn + i, r) for i, r in enumerate(records))


def snapshot_of(chat: Chat, lsn: int) -> bytes:
    enc = SnapshotEncoder(lsn, chat.clock.value)
    parts = [enc.begin(), *(enc.conversation(chat.capture(c)) for c in chat.conversation_ids())]
    return b"".join([*parts, enc.filter(chat.capture_filter()), enc.end()])


def test_replaying_the_log_rebuilds_the_same_state() -> None:
    original = Chat(Limits())
    records = workload(original)
    rebuilt, report = recover(Limits(), None, [(1, log_of(records))])
    same_state(original, rebuilt, records)
    assert (report.replayed, report.last_lsn, report.torn, report.corrupt) == (12, 12, None, None)


def test_rebuilt_state_keeps_dedup_and_sequencing() -> None:
    original = Chat(Limits())
    records = workload(original)
    rebuilt, _ = recover(Limits(), None, [(1, log_of(records))])
    dup = submit(rebuilt, "alice", "d", Send(conv=DM, cmid="m1", body="again"), 0)
    assert dup.record is None
    assert dup.reply.seq == 1  # type: ignore[union-attr]
    fresh = submit(rebuilt, "alice", "d", Send(conv=DM, cmid="new", body=1), 0)
    assert fresh.record.seq == 8  # type: ignore[union-attr]
    assert fresh.record.ts == original.clock.value + 1  # type: ignore[union-attr]


@pytest.mark.parametrize("snap_at", [0, 3, 7, 12])
def test_snapshot_plus_the_rest_of_the_log_is_the_same_state(snap_at: int) -> None:
    original = Chat(Limits())
    records = workload(original)
    partial, _ = recover(Limits(), None, [(1, log_of(records[:snap_at]))])
    snap = decode(snapshot_of(partial, snap_at))
    rebuilt, report = recover(Limits(), snap, [(1, log_of(records))])
    same_state(original, rebuilt, records)
    assert report.replayed == 12 - snap_at


def test_a_fuzzy_snapshot_holding_later_events_replays_idempotently() -> None:
    original = Chat(Limits())
    records = workload(original)
    # captured after every record was applied, but tagged as of LSN 4
    snap = decode(snapshot_of(original, 4))
    rebuilt, _ = recover(Limits(), snap, [(1, log_of(records))])
    same_state(original, rebuilt, records)


def test_retention_survives_a_snapshot() -> None:
    original = Chat(Limits(retain_messages=3))
    records = workload(original)
    for floor in original.retention_due():
        original.apply(floor)
        records.append(floor)
    snap = decode(snapshot_of(original, len(records)))
    rebuilt, _ = recover(Limits(retain_messages=3), snap, [])
    same_state(original, rebuilt, records)
    msgs = history(rebuilt, "alice", DM, [r for r in records if isinstance(r, Event)])
    assert ([e.seq for e in msgs], rebuilt.floor(DM)) == ([5, 6, 7], 5)


def test_damaged_snapshots_are_refused() -> None:
    chat = Chat(Limits())
    workload(chat)
    data = snapshot_of(chat, 12)
    assert isinstance(decode(data), Snapshot)
    for bad in (data[:-1], data[:20], b"nope" + data[4:], data[:30] + b"\x00" + data[31:]):
        with pytest.raises(SnapshotError):
            decode(bad)


def test_damage_before_the_tail_stops_recovery_there() -> None:
    original = Chat(Limits())
    records = workload(original)
    first, second = log_of(records[:6]), log_of(records[6:], first_lsn=7)
    broken = bytearray(first)
    broken[30] ^= 0x40
    _chat, report = recover(Limits(), None, [(1, bytes(broken)), (7, second)])
    assert report.corrupt is not None
    assert report.corrupt[0] == 1
    assert isinstance(report.corrupt[1], Corrupt)
    assert report.unread_segments == [7]
    assert report.last_lsn == 0


def test_a_missing_segment_is_corrupt() -> None:
    records = workload(Chat(Limits()))
    _, report = recover(Limits(), None, [(1, log_of(records[:3])), (6, log_of(records[5:], 6))])
    assert report.corrupt is not None
    assert "missing" in report.corrupt[1].reason
    assert report.last_lsn == 3


def test_a_torn_tail_of_the_last_segment_is_reported_for_truncation() -> None:
    records = workload(Chat(Limits()))
    data = log_of(records)
    _, report = recover(Limits(), None, [(1, data[:-5])])
    assert report.torn is not None
    assert report.torn[0] == 1
    assert report.last_lsn == 11
    assert report.corrupt is None


def receipts(chat: Chat) -> list[Record]:
    """A direct conversation where both cursors of both parties move; the records in
    commit order."""
    records: list[Record] = []

    def commit(out: Outcome | None) -> None:
        if out is not None and out.record is not None:
            chat.apply(out.record)
            records.append(out.record)

    for i in range(4):
        commit(submit(chat, "alice", "d", Send(conv=DM, cmid=f"a{i}", body=i), 0))
    commit(chat.receive("bob", "phone", Recv(conv=DM, seq=2)))
    commit(submit(chat, "bob", "phone", Read(conv=DM, seq=1), 0))
    commit(chat.receive("bob", "laptop", Recv(conv=DM, seq=4)))
    commit(submit(chat, "bob", "phone", Send(conv=DM, cmid="b", body="ok"), 0))
    commit(chat.receive("alice", "d", Recv(conv=DM, seq=5)))
    commit(submit(chat, "bob", "phone", Read(conv=DM, seq=4), 0))
    return records


def cursors_of(chat: Chat) -> tuple[object, ...]:
    return (
        chat.summaries("alice"),
        chat.summaries("bob"),
        chat.cursors.reads(DM),
        chat.cursors.delivered_all(DM),
    )


@pytest.mark.parametrize("snap_at", range(11))
def test_snapshot_plus_log_restores_delivered_cursors(snap_at: int) -> None:
    original = Chat(Limits())
    records = receipts(original)
    assert len(records) == 10
    assert original.cursors.delivered_all(DM) == {"bob": 4, "alice": 5}
    partial, _ = recover(Limits(), None, [(1, log_of(records[:snap_at]))])
    snap = decode(snapshot_of(partial, snap_at))
    rebuilt, report = recover(Limits(), snap, [(1, log_of(records))])
    assert report.replayed == 10 - snap_at
    assert cursors_of(rebuilt) == cursors_of(original)
    # and a recv the rebuilt state has already committed makes no record
    assert rebuilt.receive("bob", "phone", Recv(conv=DM, seq=3)) is None


def test_a_snapshot_alone_holds_the_delivered_cursors() -> None:
    original = Chat(Limits())
    records = receipts(original)
    snap = decode(snapshot_of(original, len(records)))
    (state,) = snap.conversations
    assert (state.reads, state.delivered) == ({"bob": 4}, {"bob": 4, "alice": 5})
    rebuilt, report = recover(Limits(), snap, [(1, log_of(records))])
    assert report.replayed == 0
    assert cursors_of(rebuilt) == cursors_of(original)


# Written by the code before delivered cursors were stored (snapshot version 1, and a log of
# kinds 1 and 2): alice sent seqs 1 and 2 in dm:alice:bob, bob read 1 (and received 2, which
# was not stored then), alice created g:x with bob. Snapshot and log hold the same state.
V1_SNAPSHOT = bytes.fromhex(
    "494d534e415000019fa3617601636c736e0465636c6f636b03866c646d3a616c6963653a626f620202f6a163"
    "626f62018288010165616c69636561641903e8626d31626869f688020265616c69636561641903e9626d32a1"
    "616e02f68663673a7801038465616c6963656158f4828265616c696365656f776e65728263626f62666d656d"
    "626572a08188010365616c69636561641903ebf6f685666372656174658265616c69636563626f62f66158f4"
    "ffa900000000000000b28479f5"
)
V1_LOG = bytes.fromhex(
    "494d57414c00010a2300000001000000000000008f44d0128a016c646d3a616c6963653a626f62010165616c"
    "69636561641903e8626d31626869f62400000002000000000000009a7eded68a016c646d3a616c6963653a62"
    "6f62020265616c69636561641903e9626d32a1616e02f61a0000000300000000000000b099b25f85026c646d"
    "3a616c6963653a626f6263626f626570686f6e65012c0000000400000000000000243d4a4c8a0163673a7801"
    "0365616c69636561641903ebf6f685666372656174658265616c69636563626f62f66158f4"
)


def test_a_version_1_snapshot_and_log_still_load() -> None:
    snap = decode(V1_SNAPSHOT)
    assert (snap.lsn, snap.clock) == (4, 3)
    by_conv = {state.conv: state for state in snap.conversations}
    assert (by_conv[DM].head, by_conv[DM].reads, by_conv[DM].delivered) == (2, {"bob": 1}, {})
    assert by_conv["g:x"].roster == ("alice", "X", False, (("alice", "owner"), ("bob", "member")))
    from_snapshot, _ = recover(Limits(), snap, [])
    from_log, report = recover(Limits(), None, [(1, V1_LOG)])
    assert (report.replayed, report.corrupt, report.torn) == (4, None, None)
    # the snapshot's events are for the store (an upgrade puts them there)
    assert [e.body for e in by_conv[DM].events] == ["hi", {"n": 2}]
    for chat in (from_snapshot, from_log):
        dm, group = sorted(chat.summaries("alice"), key=lambda s: s.conv)
        assert (dm.head, dm.peer_read, dm.peer_delivered) == (2, 1, 0)
        assert (group.head, group.peer_read) == (1, None)
        assert [e.body for e in history(chat, "alice", DM, by_conv[DM].events)] == ["hi", {"n": 2}]
    assert cursors_of(from_snapshot) == cursors_of(from_log)
    # written again, it is a version 3 snapshot of the same state
    rewritten, _ = recover(Limits(), decode(snapshot_of(from_snapshot, 4)), [])
    assert cursors_of(rewritten) == cursors_of(from_snapshot)
