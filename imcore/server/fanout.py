"""Fan-out tables, sharded by conversation: who is live in each conversation, and pushes.

Each shard owns the table of its conversations (conv -> live recipients, split by encoding)
and one task that carries out, for each conversation in order, its queue of work: attaching
and detaching recipients and pushing frames. A recipient receives one conversation's pushes
in seq order, while a flood to a big group holds up neither the other shards nor the other
conversations of its own shard: they take turns, a slice of recipients at a time.
The tables are kept current by connect, disconnect and the membership deltas of each event,
never recomputed per message. A frame is encoded once per encoding, and the same bytes are
queued for every recipient.

The fan-out knows a connection only as a `Recipient`, and finds the live ones of a user or
a session through the `Directory` it is given: it keeps no registry of its own, only which
tables each recipient is in.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from ..core import Event
from .websocket import preframe

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ..core import Codec, Deliveries
    from .metrics import Metrics

#: A big fan-out yields to the scheduler after this many recipients, so it cannot hold the
#: event loop (and every other connection's latency) for the whole group.
YIELD_EVERY = 32
#: At most this many events of one conversation are pushed as one run; a longer backlog is
#: split, so no outbox gets more at once than a healthy reader drains in one write.
MAX_RUN = 64


class Recipient(Protocol):
    """A live connection, as the fan-out sees it."""

    @property
    def user(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def codec_index(self) -> int:
        """Which of the fan-out's codecs it speaks."""

    def push(self, frames: list[bytes], size: int, conv: str, seq: int, now_ms: int) -> None:
        """Queue pre-framed `frames` (`size` bytes in all) of `conv`; `seq` is the first
        event's seq when they are events (so they may be resent), else 0."""


class Directory(Protocol):
    """Where the fan-out finds live recipients (the server's registry of connections)."""

    def of_users(self, users: Iterable[str]) -> Iterable[Recipient]:
        """The live, authenticated connections of `users`."""

    def of_sessions(self, sessions: Iterable[str]) -> Iterable[Recipient]:
        """The live connections with these session ids."""


_Route = tuple[set[Recipient], ...]  # one set of recipients per encoding


@dataclass(frozen=True, slots=True)
class Attach:
    conv: str
    recipient: Recipient


@dataclass(frozen=True, slots=True)
class Detach:
    conv: str
    recipient: Recipient


@dataclass(frozen=True, slots=True)
class Push:
    deliveries: Deliveries


ShardOp = Attach | Detach | Push


class PushJob:
    """Frames of one conversation to their audience, a slice of recipients at a time: one
    frame, or a run of consecutive events to every live member (each recipient visited once
    for the whole run, and given all of it in one put).

    Args:
        shard: the shard whose tables it reads and changes.
        run: the deliveries, in seq order; more than one only for a run to members.
        groups: the recipients, one list per encoding.
    """

    __slots__ = ("_at", "_frames", "_group", "_now", "_run", "_shard", "_started", "groups", "sent")

    def __init__(self, shard: Shard, run: list[Deliveries], groups: list[list[Recipient]]):
        self._shard = shard
        self._run = run
        self.groups = groups
        self._group = 0  # the encoding being pushed
        self._at = 0  # the next recipient in it
        self._frames: tuple[list[bytes], int] | None = None  # its frames, encoded once
        self._now = shard.fanout.now_ms()
        self._started = time.perf_counter()
        self.sent = 0  # recipients so far

    def step(self, budget: int) -> bool:
        """Push to at most `budget` more recipients. Returns whether the job is done (and
        then its membership changes and metrics are done too)."""
        first = self._run[0]
        conv, frame = first.conv, first.frame
        seq = frame.seq if isinstance(frame, Event) else 0  # only events are resent
        audience = first.audience
        exclude_user, exclude_device = audience.exclude_user, audience.exclude_device
        groups = self.groups
        while self._group < len(groups):
            targets = groups[self._group]
            if self._at < len(targets):
                frames = self._frames
                if frames is None:
                    codec = self._shard.fanout.codecs[self._group]
                    payloads = [preframe(codec.encode(d.frame)) for d in self._run]
                    frames = self._frames = (payloads, sum(map(len, payloads)))
                payloads, size = frames
                end, now = min(len(targets), self._at + budget), self._now
                if exclude_user is None and exclude_device is None:  # the hot path
                    for recipient in targets[self._at : end]:
                        recipient.push(payloads, size, conv, seq, now)
                    self.sent += end - self._at
                else:
                    for recipient in targets[self._at : end]:
                        if recipient.user == exclude_user or (
                            (recipient.user, recipient.device) == exclude_device
                        ):
                            continue
                        recipient.push(payloads, size, conv, seq, now)
                        self.sent += 1
                budget -= end - self._at
                self._at = end
                if end < len(targets):
                    return False
            self._group += 1
            self._at, self._frames = 0, None
            if budget <= 0 and self._group < len(groups):
                return False
        self._finish()
        return True

    def _finish(self) -> None:
        shard, run, sent = self._shard, self._run, self.sent
        last = run[-1]
        for user in last.left:
            for recipient in shard.fanout.directory.of_users((user,)):
                shard.detach(last.conv, recipient)
        if not sent:
            return
        metrics = shard.fanout.metrics
        for d in run:
            metrics.frame_out(d.frame, sent)
        if isinstance(last.frame, Event):
            for _ in run:
                metrics.fanout_recipients.observe(sent)
            metrics.deliveries.inc(sent * len(run))
            metrics.fanout_seconds.observe((time.perf_counter() - self._started) / len(run))


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
        self._jobs: dict[str, PushJob] = {}  # a push in progress, by conversation
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

    def attach(self, conv: str, recipient: Recipient) -> None:
        tables = self.fanout.tables.get(recipient)
        if tables is None:
            return  # disconnected since: it must not come back into any table
        route = self.routes.get(conv)
        if route is None:
            route = self.routes[conv] = tuple(set() for _ in self.fanout.codecs)
        route[recipient.codec_index].add(recipient)
        tables.add(conv)

    def detach(self, conv: str, recipient: Recipient) -> None:
        tables = self.fanout.tables.get(recipient)
        if tables is not None:
            tables.discard(conv)
        route = self.routes.get(conv)
        if route is None:
            return
        route[recipient.codec_index].discard(recipient)
        if not any(route):
            del self.routes[conv]

    async def run(self) -> None:
        ready, queues, jobs = self._ready, self._queues, self._jobs
        spent = 0  # recipients and table changes since the last checkpoint
        while True:
            while not ready:
                spent = 0
                await self._lot.park()
            conv = ready.popleft()
            queue = queues[conv]
            job = jobs.pop(conv, None) or self._next_job(queue)
            if job is not None:
                before = job.sent
                if not job.step(YIELD_EVERY):  # its next slice comes in turn
                    jobs[conv] = job
                spent += job.sent - before
            if queue or conv in jobs:
                ready.append(conv)
            else:
                del queues[conv]
            spent += 1
            if spent >= YIELD_EVERY:
                spent = 0
                await trio.lowlevel.checkpoint()

    def _next_job(self, queue: deque[ShardOp]) -> PushJob | None:
        """Carry out the table changes at the head of `queue`; the push after them as a job,
        if one comes next."""
        while queue:
            match queue.popleft():
                case Push(deliveries):
                    run = [deliveries]
                    if _to_members(deliveries):
                        while len(run) < MAX_RUN and queue:
                            more = _continuing(queue[0], deliveries.conv)
                            if more is None:
                                break
                            queue.popleft()
                            run.append(more)
                    return PushJob(self, run, self._audience(deliveries))
                case Attach(conv, recipient):
                    self.attach(conv, recipient)
                case Detach(conv, recipient):
                    self.detach(conv, recipient)
        return None

    def _audience(self, d: Deliveries) -> list[list[Recipient]]:
        """The recipients of `d`, one list per encoding; new members attached first."""
        directory, audience = self.fanout.directory, d.audience
        if audience.sessions is not None:
            return self._split(directory.of_sessions(audience.sessions))
        if audience.users is not None:
            return self._split(directory.of_users(audience.users))
        for user in d.joined:
            for recipient in directory.of_users((user,)):
                self.attach(d.conv, recipient)
        return [list(conns) for conns in self.routes.get(d.conv, ())]

    def _split(self, recipients: Iterable[Recipient]) -> list[list[Recipient]]:
        groups: list[list[Recipient]] = [[] for _ in self.fanout.codecs]
        for recipient in recipients:
            groups[recipient.codec_index].append(recipient)
        return groups


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


def _continuing(op: ShardOp, conv: str) -> Deliveries | None:
    """`op`'s deliveries if they can extend a run of `conv`."""
    if isinstance(op, Push) and op.deliveries.conv == conv and _to_members(op.deliveries):
        return op.deliveries
    return None


class Fanout:
    """The shards, and which tables each live recipient is in.

    Args:
        codecs: one per encoding; a recipient's `codec_index` points into this list.
        shards: how many ordering domains to run.
        directory: finds the live recipients of users and sessions.
        metrics: counts pushes and deliveries.
        now_ms: the clock the resend deadlines use.
    """

    def __init__(
        self,
        codecs: list[Codec],
        shards: int,
        directory: Directory,
        metrics: Metrics,
        now_ms: Callable[[], int],
    ) -> None:
        self.codecs = codecs
        self.directory = directory
        self.metrics = metrics
        self.now_ms = now_ms
        self.shards = [Shard(self) for _ in range(shards)]
        #: every connected recipient -> the conversations whose tables hold it
        self.tables: dict[Recipient, set[str]] = {}

    def shard(self, conv: str) -> Shard:
        return self.shards[hash(conv) % len(self.shards)]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for shard in self.shards:
                nursery.start_soon(shard.run)
            task_status.started()

    def connect(self, recipient: Recipient, convs: Iterable[str]) -> None:
        """Put `recipient` in the tables of `convs` (in order with their pushes)."""
        self.tables.setdefault(recipient, set())
        for conv in convs:
            self.shard(conv).enqueue(Attach(conv, recipient))

    def disconnect(self, recipient: Recipient) -> None:
        """Take `recipient` out of every table: nothing more is pushed to it from now on,
        and an attach still queued for it is dropped. Idempotent."""
        for conv in self.tables.pop(recipient, ()):
            self.shard(conv).enqueue(Detach(conv, recipient))

    def tables_of(self, recipient: Recipient) -> int:
        """How many conversation tables hold `recipient`."""
        return len(self.tables.get(recipient, ()))

    def publish(self, deliveries: Deliveries) -> None:
        """Queue a push on the shard of its conversation."""
        self.shard(deliveries.conv).enqueue(Push(deliveries))
