"""The one timer task: each owner is called at its latest deadline, in time order."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from imcore.server.timers import Timers


class Owner:
    def __init__(self, name: str, calls: list[tuple[str, float]]) -> None:
        self.name, self.calls, self.due = name, calls, math.inf

    def on_timer(self) -> None:
        self.calls.append((self.name, trio.current_time()))


@pytest.fixture
async def timers(nursery: trio.Nursery) -> Timers:
    started = Timers()
    await nursery.start(started.run)
    return started


@pytest.fixture
def calls() -> list[tuple[str, float]]:
    return []


async def test_owners_are_called_at_their_deadlines_and_moved_ones_only_once(
    timers: Timers, calls: list[tuple[str, float]], autojump_clock: trio.testing.MockClock
) -> None:
    a, b = Owner("a", calls), Owner("b", calls)
    timers.schedule(a, 30.0)
    timers.schedule(b, 20.0)
    timers.schedule(a, 10.0)  # moved earlier: the entry at 30 is stale now
    await trio.sleep(60)
    assert calls == [("a", 10.0), ("b", 20.0)]
    assert a.due == b.due == math.inf
    assert len(timers) == 0


async def test_an_earlier_deadline_wakes_the_sleeping_task(
    timers: Timers, calls: list[tuple[str, float]], autojump_clock: trio.testing.MockClock
) -> None:
    late, early = Owner("late", calls), Owner("early", calls)
    timers.schedule(late, 100.0)
    await trio.sleep(1)
    timers.schedule(early, 5.0)
    await trio.sleep(200)
    assert calls == [("early", 5.0), ("late", 100.0)]


async def test_deadlines_close_together_are_handled_in_one_wake_up_at_most_20_ms_late(
    timers: Timers, calls: list[tuple[str, float]], autojump_clock: trio.testing.MockClock
) -> None:
    for name, when in [("a", 10.001), ("b", 10.013), ("c", 10.02), ("d", 10.021)]:
        timers.schedule(Owner(name, calls), when)
    await trio.sleep(11)
    assert [name for name, _ in calls] == ["a", "b", "c", "d"]
    assert [at for _, at in calls] == [10.02, 10.02, 10.02, 10.04]


# A wake-up a hair early spins at one instant of the MockClock, which then never moves: no
# `fail_after` can end this test, only the wall-clock timeout (tests/conftest.py).
@pytest.mark.timeout(10)
async def test_a_deadline_a_hair_past_a_grid_point_is_still_handled(
    timers: Timers, calls: list[tuple[str, float]], autojump_clock: trio.testing.MockClock
) -> None:
    # 0.64 + 1.0 is 1.6400000000000001, and 1.6400000000000001 * 50 rounds to exactly 82:
    # a wake-up at 1.64 would come a hair early, find nothing due, and sleep to 1.64 again.
    timers.schedule(Owner("a", calls), 0.64 + 1.0)
    timers.schedule(Owner("never", calls), math.inf)
    await trio.sleep(2)
    assert calls == [("a", 0.64 + 1.0)]
