"""Timers: one task that wakes each connection at its next deadline.

A connection has a few deadlines (the hello timeout, the next heartbeat, the next resend),
and the session decides what each one means. Keeping them in one heap, worked by one task,
spares every connection an idle watchdog task and its memory: 20,000 idle connections cost
20,000 heap entries, and about one wake-up per connection per heartbeat.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from typing import Protocol

import trio

#: Longest run of deadlines handled before letting other tasks run (seconds). By time, not
#: count: a heartbeat costs microseconds, but a resend may write a conversation's backlog.
SLICE_S = 0.002
#: The task wakes on a grid of this many wake-ups a second, and then handles every deadline
#: that has come: 19,000 connections' heartbeats fall every millisecond or so, and a wake-up
#: of its own for each cost more than the heartbeat. A deadline is at most 20 ms late.
GRID_PER_S = 50


def _slot(when: float) -> float:
    """The first grid point at or after `when`. (Never before it: `when * GRID_PER_S` can
    round down to a whole number, and a wake-up a hair early would handle nothing and
    sleep to the same point again.)"""
    if math.isinf(when):
        return when
    return max(math.ceil(when * GRID_PER_S) / GRID_PER_S, when)


class Timed(Protocol):
    """Something with one deadline at a time: `due` is when it wants `on_timer` called."""

    due: float

    def on_timer(self) -> None: ...


class Timers:
    """A heap of (deadline, owner). An entry whose owner has moved its `due` since is stale
    and skipped, so rescheduling never searches the heap."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._order = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, owner: Timed, when: float) -> None:
        """Call `owner.on_timer()` at trio time `when` (and no earlier one it had)."""
        owner.due = when
        heap = self._heap
        earliest = heap[0][0] if heap else math.inf
        heapq.heappush(heap, (when, next(self._order), owner))
        if _slot(when) < _slot(earliest):
            self._lot.unpark_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        heap = self._heap
        task_status.started()
        while True:
            now = trio.current_time()
            sliced = time.perf_counter()
            while heap and heap[0][0] <= now:
                when, _, owner = heapq.heappop(heap)
                if owner.due == when:  # not moved since
                    owner.due = math.inf
                    owner.on_timer()
                    if time.perf_counter() - sliced > SLICE_S:  # deadlines fall together
                        await trio.lowlevel.checkpoint()
                        sliced = time.perf_counter()
            with trio.move_on_at(_slot(heap[0][0]) if heap else math.inf):
                await self._lot.park()
