"""The collection policy: survivors of a young collection are frozen, cycles among frozen
objects are freed by a full collection once the frozen set has doubled."""

from __future__ import annotations

import gc
import sys
import weakref
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from imcore.server import collector as collector_module
from imcore.server.collector import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def collector() -> Iterator[Collector]:
    pauses: list[float] = []
    installed = Collector(young=1_000, on_pause=pauses.append)
    thresholds = gc.get_threshold()
    installed.install()
    try:
        yield installed
    finally:
        installed.uninstall()
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0


def test_what_outlives_a_young_collection_is_frozen(collector: Collector) -> None:
    before = gc.get_freeze_count()
    survivors = [Node() for _ in range(500)]
    gc.collect(0)
    assert gc.get_freeze_count() >= before + len(survivors)


def test_a_cycle_among_frozen_objects_waits_for_a_full_collection(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    gc.collect(0)  # the pair survives, so it is frozen
    del a, b
    gc.collect(0)
    assert gone() is not None  # frozen: no young collection sees the cycle

    monkeypatch.setattr(collector_module, "FLOOR", 0)
    collector._limit = sys.getallocatedblocks() // 2
    assert collector.due()
    collected, seconds = collector.collect_fully()
    assert gone() is None
    assert collected >= 2
    assert seconds >= 0
    assert not collector.due()  # the next one waits for memory in use to double again
    assert collector.full_collections == 1


def test_pauses_are_reported(collector: Collector) -> None:
    pauses: list[float] = []
    collector.on_pause = pauses.append
    gc.collect(0)
    gc.collect(0)
    assert len(pauses) == 2
    assert all(p >= 0 for p in pauses)


async def test_a_young_generation_hidden_by_frees_of_old_objects_is_still_collected(
    collector: Collector, autojump_clock: trio.testing.MockClock
) -> None:
    old = [Node() for _ in range(3_000)]
    gc.collect(0)  # old is frozen now
    new: list[Node] = []
    for _ in range(3_000):  # one freed for each made: the allocation count stays near 0
        new.append(Node())
        old.pop()
    assert gc.get_count()[0] < collector.young
    assert len(gc.get_objects(0)) >= collector.young
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.watch)
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert len(gc.get_objects(0)) < collector.young


def test_young_generations_are_only_frozen_while_collections_find_nothing(
    collector: Collector,
) -> None:
    kept: list[Node] = []

    def tend_full() -> str:
        """Fill the young generation with survivors, tend it: what it did."""
        kept.extend(Node() for _ in range(collector.young))
        frozen = collector.young_frozen
        pauses: list[float] = []
        collector.on_pause = pauses.append
        collector.tend()
        assert len(gc.get_objects(0)) < collector.young
        return "frozen" if collector.young_frozen > frozen else "collected" if pauses else "-"

    gc.disable()  # only `tend` decides here
    try:
        assert tend_full() == "collected"  # nothing found: the next one is only frozen
        assert tend_full() == "frozen"
        assert tend_full() == "collected"  # nothing again: the next three are frozen
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert [tend_full() for _ in range(3)] == ["frozen"] * 3
        c, d = Node(), Node()
        c.other, d.other = d, c
        gone = weakref.ref(c)
        del c, d
        assert tend_full() == "collected"
        assert gone() is None  # garbage found: back to collecting every time
        assert tend_full() == "collected"
    finally:
        gc.enable()


def test_two_servers_in_one_process_share_the_collector() -> None:
    thresholds = gc.get_threshold()
    first, second = Collector(young=1_000), Collector(young=1_000)
    first.install()
    second.install()
    first.uninstall()
    assert gc.get_threshold()[0] == 1_000  # the second still runs
    assert second._on_collection in gc.callbacks
    second.uninstall()
    second.uninstall()  # a second call changes nothing
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == 0
