"""Fan-out tables, sharded by conversation: who is live in each conversation, and pushes.

Each shard owns the table of its conversations (conv -> live connections, split by encoding)
and one task that carries out, for each conversation in order, its queue of work: attaching
and detaching connections and pushing frames. A connection receives one conversation's
pushes in seq order, while a flood to a big group holds up neither the other shards nor the
other conversations of its own shard: they take turns, a slice of recipients at a time.
The table is kept current by connect, disconnect and the membership deltas of each event,
never recomputed per message. A frame is encoded once per encoding, and the same bytes are
queued for every recipient.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ..core import Event
from .websocket import preframe

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ..core import Codec, Deliveries
    from .connection import Connection
    from .metrics import Metrics

#: A big fan-out yields to the scheduler after this many recipients, so it cannot hold the
#: event loop (and every other connection's latency) for the whole group.
YIELD_EVERY = 32
#: At most this many events of one conversation are pushed as one run; a longer backlog is
#: split, so no outbox gets more at once than a healthy reader drains in one write.
MAX_RUN = 64

_Route = tuple[set["Connection"], ...]  # one set of connections per encoding


@dataclass(frozen=True, slots=True)
class Attach:
    conv: str
    conn: Connection


@dataclass(frozen=True, slots=True)
class Detach:
    conv: str
    conn: Connection


@dataclass(frozen=True, slots=True)
class Push:
    deliveries: Deliveries


ShardOp = Attach | Detach | Push


class Shard:
    """One ordering domain: its conversations' routes, and a queue per conversation worked
    by one task. The task takes the conversations with work in turn, a slice at a time (at
    most `YIELD_EVERY` recipients), so a push to a big group does not hold up a direct
    message behind it in the same shard: order is kept within each conversation, which is
    all the protocol promises (spec §5)."""

    __slots__ = ("_jobs", "_lot", "_queues", "_ready", "fanout", "routes")

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.routes: dict[str, _Route] = {}
        self._queues: dict[str, deque[ShardOp]] = {}  # conversations with work, in turn
        self._ready: deque[str] = deque()  # ... in the order they get their next slice
        self._jobs: dict[str, Iterator[int]] = {}  # a push in progress, by conversation
        self._lot = trio.lowlevel.ParkingLot()

    def enqueue(self, op: ShardOp) -> None:
        conv = op.deliveries.conv if isinstance(op, Push) else op.conv
        queue = self._queues.get(conv)
        if queue is None:
            queue = self._queues[conv] = deque()
            self._ready.append(conv)
            if len(self._ready) == 1:
                self._lot.unpark_all()
        queue.append(op)

    def _attach(self, conv: str, conn: Connection) -> None:
        if conn.closed:
            return
        route = self.routes.get(conv)
        if route is None:
            route = self.routes[conv] = tuple(set() for _ in self.fanout.codecs)
        route[conn.codec_index].add(conn)
        conn.attached.add(conv)

    def _detach(self, conv: str, conn: Connection) -> None:
        conn.attached.discard(conv)
        route = self.routes.get(conv)
        if route is None:
            return
        route[conn.codec_index].discard(conn)
        if not any(route):
            del self.routes[conv]

    async def run(self) -> None:
        ready, queues, jobs = self._ready, self._queues, self._jobs
        done = 0  # recipients since the last checkpoint
        while True:
            while not ready:
                done = 0
                await self._lot.park()
            conv = ready.popleft()
            queue = queues[conv]
            job = jobs.pop(conv, None) or self._next_job(queue)
            if job is not None:
                sent = next(job, None)
                if sent is not None:  # not finished: its next slice comes in turn
                    jobs[conv] = job
                    done += sent
            if queue or conv in jobs:
                ready.append(conv)
            else:
                del queues[conv]
            done += 1
            if done >= YIELD_EVERY:
                done = 0
                await trio.lowlevel.checkpoint()

    def _next_job(self, queue: deque[ShardOp]) -> Iterator[int] | None:
        """Carry out the table changes at the head of `queue`; the push after them as a job
        of slices, if one comes next."""
        while queue:
            match queue.popleft():
                case Push(deliveries) if _to_members(deliveries):
                    run = [deliveries]
                    while queue and len(run) < MAX_RUN and _continues(queue[0], deliveries.conv):
                        run.append(queue.popleft().deliveries)  # type: ignore[union-attr]
                    return self._push_run(deliveries.conv, run)
                case Push(deliveries):
                    return self._push(deliveries)
                case Attach(conv, conn):
                    self._attach(conv, conn)
                case Detach(conv, conn):
                    self._detach(conv, conn)
        return None

    def _push_run(self, conv: str, run: list[Deliveries]) -> Iterator[int]:
        """Consecutive events of one conversation to all its live members, with no change of
        membership among them: each recipient is visited once for the whole run and gets
        all of it in one put. Yields the recipients of each slice."""
        fanout = self.fanout
        first = run[0].frame
        assert isinstance(first, Event)  # _to_members
        first_seq = first.seq
        now = fanout.now_ms()
        started = time.perf_counter()
        sent = 0
        for index, conns in enumerate(self.routes.get(conv, ())):
            if not conns:
                continue
            codec = fanout.codecs[index]
            payloads = [preframe(codec.encode(d.frame)) for d in run]  # once per encoding
            size = sum(map(len, payloads))
            for conn in conns:
                conn.outbox.put_many(payloads, size)
                if conn.session.pushed(conv, first_seq, now):
                    conn.wake()
                sent += 1
                if sent % YIELD_EVERY == 0:
                    yield YIELD_EVERY
        yield sent % YIELD_EVERY
        metrics = fanout.metrics
        if metrics is not None and sent:
            for d in run:
                metrics.frame_out(d.frame, sent)
                metrics.fanout_recipients.observe(sent)
            metrics.deliveries.inc(sent * len(run))
            metrics.fanout_seconds.observe((time.perf_counter() - started) / len(run))

    def _push(self, d: Deliveries) -> Iterator[int]:
        """One frame to its audience, with the membership changes it carries. Yields the
        recipients of each slice."""
        fanout = self.fanout
        audience = d.audience
        groups: Iterable[Iterable[Connection]]
        if audience.sessions is not None:
            groups = _split(fanout.sessions_of(audience.sessions), len(fanout.codecs))
        elif audience.users is not None:
            groups = _split(fanout.conns_of(audience.users), len(fanout.codecs))
        else:
            for user in d.joined:
                for conn in fanout.conns_of((user,)):
                    self._attach(d.conv, conn)
            groups = self.routes.get(d.conv, ())
        exclude_user, exclude_device = audience.exclude_user, audience.exclude_device
        frame = d.frame
        resendable = isinstance(frame, Event)  # receipts and presence are never resent
        seq = frame.seq if isinstance(frame, Event) else 0
        now = fanout.now_ms()
        started = time.perf_counter()
        sent = 0
        for index, conns in enumerate(groups):
            if not conns:
                continue
            payload = preframe(fanout.codecs[index].encode(d.frame))  # once per encoding
            for conn in conns:
                if exclude_user is not None and conn.user == exclude_user:
                    continue
                if exclude_device is not None and (conn.user, conn.device) == exclude_device:
                    continue
                conn.outbox.put_nowait(payload)
                if resendable and conn.session.pushed(d.conv, seq, now):
                    conn.wake()
                sent += 1
                if sent % YIELD_EVERY == 0:
                    yield YIELD_EVERY
        yield sent % YIELD_EVERY
        for user in d.left:
            for conn in fanout.conns_of((user,)):
                self._detach(d.conv, conn)
        metrics = fanout.metrics
        if metrics is not None and sent:
            metrics.frame_out(frame, sent)
            if resendable:
                metrics.deliveries.inc(sent)
                metrics.fanout_recipients.observe(sent)
                metrics.fanout_seconds.observe(time.perf_counter() - started)


def _to_members(d: Deliveries) -> bool:
    """An event for every live member, with no membership change: it can join a run."""
    a = d.audience
    return (
        isinstance(d.frame, Event)
        and not d.joined
        and not d.left
        and a.users is None
        and a.sessions is None
        and a.exclude_user is None
        and a.exclude_device is None
    )


def _continues(op: ShardOp, conv: str) -> bool:
    return isinstance(op, Push) and op.deliveries.conv == conv and _to_members(op.deliveries)


def _split(conns: Iterable[Connection], n: int) -> list[list[Connection]]:
    groups: list[list[Connection]] = [[] for _ in range(n)]
    for conn in conns:
        groups[conn.codec_index].append(conn)
    return groups


class Fanout:
    """The live connections by user and session, and the shards that push to them.

    Args:
        codecs: one per encoding; a connection's `codec_index` points into this list.
        shards: how many ordering domains to run.
        now_ms: the clock the resend deadlines use.
    """

    def __init__(self, codecs: list[Codec], shards: int, now_ms: Callable[[], int]) -> None:
        self.codecs = codecs
        self.now_ms = now_ms
        self.metrics: Metrics | None = None
        self.shards = [Shard(self) for _ in range(shards)]
        self._by_user: dict[str, dict[str, Connection]] = {}
        self._by_session: dict[str, Connection] = {}

    def shard(self, conv: str) -> Shard:
        return self.shards[hash(conv) % len(self.shards)]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for shard in self.shards:
                nursery.start_soon(shard.run)
            task_status.started()

    def connect(self, conn: Connection, convs: Iterable[str]) -> Connection | None:
        """Make `conn` live in its user's conversations.

        Returns:
            The connection it replaces on the same device, if any.
        """
        devices = self._by_user.setdefault(conn.user, {})
        old = devices.get(conn.device)
        devices[conn.device] = conn
        self._by_session[conn.session.id] = conn
        for conv in convs:
            self.shard(conv).enqueue(Attach(conv, conn))
        return old

    def disconnect(self, conn: Connection) -> None:
        """Take a closed `conn` out of every table; its shards drop it in order with their
        pushes (and drop any attach still queued, since it is closed)."""
        self._by_session.pop(conn.session.id, None)
        devices = self._by_user.get(conn.user)
        if devices is not None and devices.get(conn.device) is conn:
            del devices[conn.device]
            if not devices:
                del self._by_user[conn.user]
        for conv in list(conn.attached):
            self.shard(conv).enqueue(Detach(conv, conn))

    def publish(self, deliveries: Deliveries) -> None:
        """Queue a push on the shard of its conversation."""
        self.shard(deliveries.conv).enqueue(Push(deliveries))

    def conns_of(self, users: Iterable[str]) -> list[Connection]:
        by_user = self._by_user
        return [c for u in users for c in by_user.get(u, {}).values()]

    def sessions_of(self, sessions: Iterable[str]) -> list[Connection]:
        by_session = self._by_session
        return [c for s in sessions if (c := by_session.get(s)) is not None]
