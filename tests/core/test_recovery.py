from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from imcore.core import Chat, Limits, Outcome
from imcore.core.frames import GroupAdd, GroupCreate, GroupRemove, Read, Send, Sync
from imcore.core.recovery import recover
from imcore.core.snapshot import Snapshot, SnapshotEncoder, SnapshotError, decode
from imcore.core.wal_format import SEGMENT_MAGIC, Corrupt, encode_record

if TYPE_CHECKING:
    from imcore.core.records import Record

DM = "dm:alice:bob"


def workload(chat: Chat) -> list[Record]:
    """A mixed history; returns the records in commit order."""
    records: list[Record] = []

    def do(user: str, cmd: object) -> Outcome:
        out = chat.submit(user, "d", cmd, now_ms=len(records))  # type: ignore[arg-type]
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


def same_state(a: Chat, b: Chat) -> None:
    for conv in (DM, "g:x"):
        assert a.events(conv) == b.events(conv)
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
    parts = [enc.begin()]
    for conv in chat.conversation_ids():
        parts += enc.conversation(chat.capture(conv), chunk=2)
    return b"".join([*parts, enc.end()])


def test_replaying_the_log_rebuilds_the_same_state() -> None:
    original = Chat(Limits())
    records = workload(original)
    rebuilt, report = recover(Limits(), None, [(1, log_of(records))])
    same_state(original, rebuilt)
    assert (report.replayed, report.last_lsn, report.torn, report.corrupt) == (12, 12, None, None)


def test_rebuilt_state_keeps_dedup_and_sequencing() -> None:
    original = Chat(Limits())
    records = workload(original)
    rebuilt, _ = recover(Limits(), None, [(1, log_of(records))])
    dup = rebuilt.submit("alice", "d", Send(conv=DM, cmid="m1", body="again"), 0)
    assert dup.record is None
    assert dup.reply.seq == 1  # type: ignore[union-attr]
    fresh = rebuilt.submit("alice", "d", Send(conv=DM, cmid="new", body=1), 0)
    assert fresh.record.seq == 8  # type: ignore[union-attr]
    assert fresh.record.ts == original.clock.value + 1  # type: ignore[union-attr]


@pytest.mark.parametrize("snap_at", [0, 3, 7, 12])
def test_snapshot_plus_the_rest_of_the_log_is_the_same_state(snap_at: int) -> None:
    original = Chat(Limits())
    records = workload(original)
    partial, _ = recover(Limits(), None, [(1, log_of(records[:snap_at]))])
    snap = decode(snapshot_of(partial, snap_at))
    rebuilt, report = recover(Limits(), snap, [(1, log_of(records))])
    same_state(original, rebuilt)
    assert report.replayed == 12 - snap_at


def test_a_fuzzy_snapshot_holding_later_events_replays_idempotently() -> None:
    original = Chat(Limits())
    records = workload(original)
    # captured after every record was applied, but tagged as of LSN 4
    snap = decode(snapshot_of(original, 4))
    rebuilt, _ = recover(Limits(), snap, [(1, log_of(records))])
    same_state(original, rebuilt)


def test_retention_survives_a_snapshot() -> None:
    original = Chat(Limits(retain_messages=3))
    records = workload(original)
    snap = decode(snapshot_of(original, len(records)))
    rebuilt, _ = recover(Limits(retain_messages=3), snap, [])
    same_state(original, rebuilt)
    batch = rebuilt.sync("alice", Sync(conv=DM, after=0))
    assert ([e.seq for e in batch.msgs], batch.floor) == ([5, 6, 7], 5)


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
