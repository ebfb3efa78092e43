"""Fan-out tables: kept by connect, disconnect and membership deltas; frames encoded once."""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING

import trio
import trio.testing

from imcore.core import Audience, Codec, Deliveries, Encoding, Limits
from imcore.core.frames import Event, SysChange
from imcore.server.fanout import YIELD_EVERY, Fanout
from imcore.server.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Iterable

G = "g:x"
_ids = itertools.count()


class FakeRecipient:
    """A connection as the fan-out sees it; notes every put, in order, in `log` too."""

    def __init__(
        self, user: str, device: str = "d", codec_index: int = 1, log: list[str] | None = None
    ) -> None:
        self.user, self.device, self.codec_index = user, device, codec_index
        self.session = f"s{next(_ids)}"
        self.puts: list[list[bytes]] = []
        self.pushes: list[tuple[str, int]] = []  # (conv, first seq) of each put of events
        self.log = log

    def push(self, frames: list[bytes], size: int, conv: str, seq: int, now_ms: int) -> None:
        assert size == sum(map(len, frames))
        self.puts.append(frames)
        if seq:
            self.pushes.append((conv, seq))
        if self.log is not None:
            self.log.append(self.user)

    def frames(self) -> list[bytes]:
        return [f for put in self.puts for f in put]

    def seqs(self) -> list[int]:
        return [json.loads(f[f.index(b"{") :])["seq"] for f in self.frames()]


class FakeDirectory:
    """The server's registry of live connections, as far as the fan-out asks it."""

    def __init__(self) -> None:
        self.live: list[FakeRecipient] = []

    def of_users(self, users: Iterable[str]) -> list[FakeRecipient]:
        wanted = set(users)
        return [r for r in self.live if r.user in wanted]

    def of_sessions(self, sessions: Iterable[str]) -> list[FakeRecipient]:
        wanted = set(sessions)
        return [r for r in self.live if r.session in wanted]


class Harness:
    def __init__(self, fanout: Fanout, directory: FakeDirectory) -> None:
        self.fanout, self.directory = fanout, directory

    def connect(self, recipient: FakeRecipient, convs: list[str]) -> FakeRecipient:
        self.directory.live.append(recipient)
        self.fanout.connect(recipient, convs)
        return recipient

    def disconnect(self, recipient: FakeRecipient) -> None:
        self.directory.live.remove(recipient)
        self.fanout.disconnect(recipient)


def event(seq: int, sys: SysChange | None = None) -> Event:
    return Event(
        conv=G, seq=seq, ts=seq, sender="a", dev="d", at=0, cmid=f"c{seq}", body=seq, sys=sys
    )


async def started(
    nursery: trio.Nursery,
    encodings: tuple[Encoding, ...] = (Encoding.CBOR, Encoding.JSON),
    shards: int = 4,
) -> Harness:
    limits = Limits()
    codecs = [Codec(e, limits) for e in encodings]
    directory = FakeDirectory()
    fanout = Fanout(codecs, shards=shards, directory=directory, metrics=Metrics(), now_ms=lambda: 0)
    await nursery.start(fanout.run)
    return Harness(fanout, directory)


async def test_a_push_is_encoded_once_per_encoding_and_shared(nursery: trio.Nursery) -> None:
    h = await started(nursery)
    conns = [h.connect(FakeRecipient("a", f"d{i}", codec_index=i % 2), [G]) for i in range(4)]
    h.fanout.publish(Deliveries(G, event(1)))
    await trio.testing.wait_all_tasks_blocked()
    cbor = {id(c.frames()[0]) for c in conns if c.codec_index == 0}
    text = {id(c.frames()[0]) for c in conns if c.codec_index == 1}
    assert len(cbor) == len(text) == 1  # the very same object for every recipient


async def test_joined_get_the_event_that_adds_them_and_left_get_their_removal(
    nursery: trio.Nursery,
) -> None:
    h = await started(nursery)
    a, b = h.connect(FakeRecipient("a"), [G]), h.connect(FakeRecipient("b"), [])
    add = SysChange(type="add", users=("b",))
    h.fanout.publish(Deliveries(G, event(2, add), joined=("b",)))
    remove = SysChange(type="remove", users=("b",))
    h.fanout.publish(Deliveries(G, event(3, remove), left=("b",)))
    h.fanout.publish(Deliveries(G, event(4)))
    await trio.testing.wait_all_tasks_blocked()
    assert a.seqs() == [2, 3, 4]
    assert b.seqs() == [2, 3]
    assert h.fanout.tables_of(b) == 0


async def test_a_connection_closed_while_its_user_is_removed_leaves_no_trace(
    nursery: trio.Nursery,
) -> None:
    h = await started(nursery)
    a, b = h.connect(FakeRecipient("a"), [G]), h.connect(FakeRecipient("b"), [G])
    await trio.testing.wait_all_tasks_blocked()
    h.disconnect(b)
    h.fanout.publish(Deliveries(G, event(5, SysChange(type="remove", users=("b",))), left=("b",)))
    await trio.testing.wait_all_tasks_blocked()
    assert h.fanout.shard(G).routes[G][1] == {a}
    assert b.frames() == []


async def test_a_connection_closed_before_its_tables_are_filled_never_enters_one(
    nursery: trio.Nursery,
) -> None:
    h = await started(nursery)
    a = h.connect(FakeRecipient("a"), [G])
    gone = h.connect(FakeRecipient("b"), [G])  # its attach is still queued ...
    h.disconnect(gone)  # ... when it closes
    h.fanout.publish(Deliveries(G, event(1)))
    await trio.testing.wait_all_tasks_blocked()
    assert (a.seqs(), gone.seqs()) == ([1], [])
    assert h.fanout.shard(G).routes[G][1] == {a}
    assert h.fanout.tables_of(gone) == 0


async def test_audiences_by_user_and_excluding_the_origin(nursery: trio.Nursery) -> None:
    h = await started(nursery)
    phone, laptop, peer = (
        h.connect(FakeRecipient("a", "phone"), [G]),
        h.connect(FakeRecipient("a", "laptop"), [G]),
        h.connect(FakeRecipient("b"), [G]),
    )
    await trio.testing.wait_all_tasks_blocked()
    receipt = event(6)
    h.fanout.publish(Deliveries(G, receipt, Audience(exclude_device=("a", "phone"))))
    h.fanout.publish(Deliveries(G, receipt, Audience(users=frozenset({"b"}))))
    h.fanout.publish(Deliveries(G, receipt, Audience(sessions=frozenset({laptop.session}))))
    h.fanout.publish(Deliveries(G, receipt, Audience(exclude_user="a")))
    await trio.testing.wait_all_tasks_blocked()
    assert (len(phone.frames()), len(laptop.frames()), len(peer.frames())) == (0, 2, 3)


async def test_a_backlog_of_one_conversation_reaches_each_recipient_in_one_put(
    nursery: trio.Nursery,
) -> None:
    h = await started(nursery)
    a = h.connect(FakeRecipient("a"), [G])
    await trio.testing.wait_all_tasks_blocked()
    h.fanout.publish(Deliveries(G, event(1)))
    h.fanout.publish(Deliveries(G, event(2)))
    add = SysChange(type="add", users=("b",))
    h.fanout.publish(Deliveries(G, event(3, add), joined=("b",)))  # ends the run
    for seq in (4, 5, 6):
        h.fanout.publish(Deliveries(G, event(seq)))
    b = h.connect(FakeRecipient("b", codec_index=0), [])
    await trio.testing.wait_all_tasks_blocked()
    assert a.seqs() == [1, 2, 3, 4, 5, 6]
    assert [len(put) for put in a.puts] == [2, 1, 3]  # the membership change on its own
    assert len(b.frames()) == 4  # from the event that added b
    assert a.pushes == [(G, 1), (G, 3), (G, 4)]


async def test_a_big_group_does_not_hold_up_a_direct_message_in_its_shard(
    nursery: trio.Nursery,
) -> None:
    h = await started(nursery, (Encoding.JSON,), shards=1)  # one domain for both
    log: list[str] = []
    members = [
        h.connect(FakeRecipient(f"m{i}", codec_index=0, log=log), [G])
        for i in range(5 * YIELD_EVERY)
    ]
    peer = h.connect(FakeRecipient("peer", codec_index=0, log=log), ["dm:a:peer"])
    await trio.testing.wait_all_tasks_blocked()
    h.fanout.publish(Deliveries(G, event(1)))
    h.fanout.publish(Deliveries(G, event(2)))
    dm = Event(conv="dm:a:peer", seq=1, ts=9, sender="a", dev="d", at=0, cmid="c", body=1)
    h.fanout.publish(Deliveries("dm:a:peer", dm))
    await trio.testing.wait_all_tasks_blocked()
    assert log.index("peer") == YIELD_EVERY  # right after the group's first slice
    assert len(log) == len(members) + 1  # the two group events went as one run
    for conn in members:  # each member still has the group's events in order
        assert conn.seqs() == [1, 2]
    assert peer.seqs() == [1]
