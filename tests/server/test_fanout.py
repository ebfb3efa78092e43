"""Fan-out tables: kept by connect, disconnect and membership deltas; frames encoded once."""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from imcore.core import Audience, Codec, Deliveries, Encoding, Limits
from imcore.core.frames import Event, SysChange
from imcore.server.fanout import YIELD_EVERY, Fanout
from imcore.server.outbox import Outbox

if TYPE_CHECKING:
    from imcore.server.connection import Connection

G = "g:x"
_ids = itertools.count()


class FakeSession:
    def __init__(self) -> None:
        self.id = f"s{next(_ids)}"
        self.pushes: list[tuple[str, int]] = []

    def pushed(self, conv: str, seq: int, now_ms: int) -> bool:
        self.pushes.append((conv, seq))
        return False


class FakeConnection:
    def __init__(self, user: str, device: str = "d", codec_index: int = 1) -> None:
        self.user, self.device, self.codec_index = user, device, codec_index
        self.session = FakeSession()
        self.closed = False
        self.attached: set[str] = set()
        self.outbox = Outbox(100, 1 << 20)

    def frames(self) -> list[Any]:
        return list(self.outbox._items)


class CountingOutbox(Outbox):
    def __init__(self, max_frames: int, max_bytes: int) -> None:
        super().__init__(max_frames, max_bytes)
        self.puts: list[int] = []

    def put_many(self, payloads: list[bytes], size: int) -> None:
        self.puts.append(len(payloads))
        super().put_many(payloads, size)


def event(seq: int, sys: SysChange | None = None) -> Event:
    return Event(
        conv=G, seq=seq, ts=seq, sender="a", dev="d", at=0, cmid=f"c{seq}", body=seq, sys=sys
    )


async def started(nursery: trio.Nursery) -> Fanout:
    limits = Limits()
    codecs = [Codec(Encoding.CBOR, limits), Codec(Encoding.JSON, limits)]
    fanout = Fanout(codecs, shards=4, now_ms=lambda: 0)
    await nursery.start(fanout.run)
    return fanout


def as_conn(fake: FakeConnection) -> Connection:
    return fake  # type: ignore[return-value]


async def test_a_push_is_encoded_once_per_encoding_and_shared(nursery: trio.Nursery) -> None:
    fanout = await started(nursery)
    conns = [FakeConnection("a", f"d{i}", codec_index=i % 2) for i in range(4)]
    for c in conns:
        fanout.connect(as_conn(c), [G])
    fanout.publish(Deliveries(G, event(1)))
    await trio.testing.wait_all_tasks_blocked()
    cbor = {id(c.frames()[0]) for c in conns if c.codec_index == 0}
    text = {id(c.frames()[0]) for c in conns if c.codec_index == 1}
    assert len(cbor) == len(text) == 1  # the very same object for every recipient


async def test_joined_get_the_event_that_adds_them_and_left_get_their_removal(
    nursery: trio.Nursery,
) -> None:
    fanout = await started(nursery)
    a, b = FakeConnection("a"), FakeConnection("b")
    fanout.connect(as_conn(a), [G])
    fanout.connect(as_conn(b), [])
    add = SysChange(type="add", users=("b",))
    fanout.publish(Deliveries(G, event(2, add), joined=("b",)))
    remove = SysChange(type="remove", users=("b",))
    fanout.publish(Deliveries(G, event(3, remove), left=("b",)))
    fanout.publish(Deliveries(G, event(4)))
    await trio.testing.wait_all_tasks_blocked()
    assert len(a.frames()) == 3
    assert len(b.frames()) == 2
    assert b.attached == set()


async def test_a_connection_closed_while_its_user_is_removed_leaves_no_trace(
    nursery: trio.Nursery,
) -> None:
    fanout = await started(nursery)
    a, b = FakeConnection("a"), FakeConnection("b")
    fanout.connect(as_conn(a), [G])
    fanout.connect(as_conn(b), [G])
    await trio.testing.wait_all_tasks_blocked()
    b.closed = True
    fanout.disconnect(as_conn(b))
    fanout.publish(Deliveries(G, event(5, SysChange(type="remove", users=("b",))), left=("b",)))
    await trio.testing.wait_all_tasks_blocked()
    assert fanout.shard(G).routes[G][1] == {as_conn(a)}


async def test_audiences_by_user_and_excluding_the_origin(nursery: trio.Nursery) -> None:
    fanout = await started(nursery)
    phone, laptop, peer = (
        FakeConnection("a", "phone"),
        FakeConnection("a", "laptop"),
        FakeConnection("b"),
    )
    for c in (phone, laptop, peer):
        fanout.connect(as_conn(c), [G])
    await trio.testing.wait_all_tasks_blocked()
    receipt = event(6)
    fanout.publish(Deliveries(G, receipt, Audience(exclude_device=("a", "phone"))))
    fanout.publish(Deliveries(G, receipt, Audience(users=frozenset({"b"}))))
    await trio.testing.wait_all_tasks_blocked()
    assert (len(phone.frames()), len(laptop.frames()), len(peer.frames())) == (0, 1, 2)


async def test_a_backlog_of_one_conversation_reaches_each_recipient_in_one_put(
    nursery: trio.Nursery,
) -> None:
    fanout = await started(nursery)
    a, b = FakeConnection("a"), FakeConnection("b", codec_index=0)
    fanout.connect(as_conn(a), [G])
    await trio.testing.wait_all_tasks_blocked()
    a.outbox = outbox = CountingOutbox(100, 1 << 20)
    fanout.publish(Deliveries(G, event(1)))
    fanout.publish(Deliveries(G, event(2)))
    add = SysChange(type="add", users=("b",))
    fanout.publish(Deliveries(G, event(3, add), joined=("b",)))  # ends the run
    for seq in (4, 5, 6):
        fanout.publish(Deliveries(G, event(seq)))
    fanout.connect(as_conn(b), [])
    await trio.testing.wait_all_tasks_blocked()
    assert [json.loads(f[f.index(b"{") :])["seq"] for f in a.frames()] == [1, 2, 3, 4, 5, 6]
    assert outbox.puts == [2, 3]  # the membership change was pushed on its own
    assert len(b.frames()) == 4  # from the event that added b
    assert a.session.pushes == [(G, 1), (G, 3), (G, 4)]


class LoggingOutbox(Outbox):
    """Notes in one shared list which user each put went to, in order."""

    def __init__(self, user: str, log: list[str]) -> None:
        super().__init__(100, 1 << 20)
        self.user, self.log = user, log

    def put_nowait(self, payload: bytes) -> None:
        self.log.append(self.user)
        super().put_nowait(payload)

    def put_many(self, payloads: list[bytes], size: int) -> None:
        self.log.append(self.user)
        super().put_many(payloads, size)


async def test_a_big_group_does_not_hold_up_a_direct_message_in_its_shard(
    nursery: trio.Nursery,
) -> None:
    limits = Limits()
    fanout = Fanout([Codec(Encoding.JSON, limits)], shards=1, now_ms=lambda: 0)
    await nursery.start(fanout.run)
    log: list[str] = []
    members = [FakeConnection(f"m{i}", codec_index=0) for i in range(5 * YIELD_EVERY)]
    peer = FakeConnection("peer", codec_index=0)
    for conn in [*members, peer]:
        conn.outbox = LoggingOutbox(conn.user, log)
    for conn in members:
        fanout.connect(as_conn(conn), [G])
    fanout.connect(as_conn(peer), ["dm:a:peer"])
    await trio.testing.wait_all_tasks_blocked()
    fanout.publish(Deliveries(G, event(1)))
    fanout.publish(Deliveries(G, event(2)))
    dm = Event(conv="dm:a:peer", seq=1, ts=9, sender="a", dev="d", at=0, cmid="c", body=1)
    fanout.publish(Deliveries("dm:a:peer", dm))
    await trio.testing.wait_all_tasks_blocked()
    assert log.index("peer") == YIELD_EVERY  # right after the group's first slice
    assert len(log) == len(members) + 1  # the two group events went as one run
    for conn in members:  # each member still has the group's events in order
        assert [json.loads(f[f.index(b"{") :])["seq"] for f in conn.frames()] == [1, 2]
