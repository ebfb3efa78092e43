"""Collector: Python's cyclic garbage collector, kept off a server's long-lived objects.

The collector walks every object of the generation it collects. A server holding 10,000
connections keeps about 80 tracked objects alive for each (its tasks and their coroutines,
the session, the socket), and by default they age into the older generations, where
every collection walks all of them again: 0.4 s for one middle-generation collection at
10,000 connections, measured, with every connection waiting.

So an object that outlives one young collection is frozen (`gc.freeze`): moved to the
permanent generation, which no automatic collection walks. Reference counting still frees
it when it is dropped, which is how nearly everything here dies; what the freeze delays
is only the freeing of reference cycles among frozen objects. For them, a full collection
(unfreeze, collect, freeze again) runs from a task once the memory blocks in use have
doubled since the last one, so cycles never hold more than the live state's own size, and
a server whose state grows steadily pays for a full collection only at each doubling.
(Blocks, because `sys.getallocatedblocks` costs a millisecond at a gigabyte, where
counting the frozen objects walks all of them: 65 ms for 6 million.)

The young generation is also measured every `YOUNG_EVERY_S` and collected when it holds
`young` objects or more, because the allocation count that normally starts a collection is
net of frees, and frees of old objects hide new ones: a reader that waits for its next
frame drops one chain of waiting coroutines and makes another, so 10,000 connections
answering their heartbeats filled the young generation with 150,000 objects while the
count stayed near zero. Collected that late, they cost a 100 ms pause. (Collecting on the
clock whatever the size cost 7% of the CPU under a steady load of small messages.)

Under a steady load almost nothing that reaches a young collection is garbage: the young
generation is the state just added (events, index entries) plus what is in flight, and
10,000 objects cost 2-5 ms to walk for nothing. So after a young collection that found
nothing, the next full young generations are only frozen (no walk), twice as many after
each fruitless collection in a row, up to `MAX_SKIP`; one that finds garbage goes back to
collecting every time. Cycles frozen meanwhile wait for the next full collection.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("imcore.collector")

#: Allocations (net of frees) that start a young collection; Python's default is 700, too
#: often for a server that makes a few short-lived objects per message.
YOUNG = 10_000
#: How often the task looks at the young generation's size.
YOUNG_EVERY_S = 0.1
#: At most this many full young generations in a row are frozen without being collected.
MAX_SKIP = 16
#: How often the task looks at the memory in use.
CHECK_S = 5.0
#: No full collection below this many memory blocks in use.
FLOOR = 1_000_000

# Servers of one process (as in tests) share the collector: the first to install saves its
# thresholds, the last to uninstall restores them.
_installed = 0
_saved = gc.get_threshold()


class Collector:
    """The collection policy of one server: `install` it once the state is recovered,
    `watch` it from a task, `uninstall` it when the server stops.

    Args:
        young: the young generation's threshold.
        on_pause: told the seconds of every collection.
    """

    def __init__(self, young: int = YOUNG, on_pause: Callable[[float], None] | None = None):
        self.young = young
        self.on_pause = on_pause
        self.full_collections = 0
        self.young_frozen = 0  # young generations frozen without a collection
        self._limit = FLOOR
        self._started = 0.0
        self._dry = 0  # young collections in a row that found nothing
        self._skip = 0  # full young generations to freeze without collecting

    def install(self) -> None:
        """Freeze what exists now (the recovered state), and every survivor from now on."""
        global _installed, _saved
        if _installed == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(self.young, 10, 10)
        _installed += 1
        gc.collect()
        gc.freeze()
        self._limit = max(FLOOR, 2 * sys.getallocatedblocks())
        gc.callbacks.append(self._on_collection)

    def uninstall(self) -> None:
        """Stop this policy. The last one of the process to stop puts the collector's
        thresholds back and makes frozen objects collectable again."""
        global _installed
        if self._on_collection not in gc.callbacks:
            return
        gc.callbacks.remove(self._on_collection)
        _installed -= 1
        if _installed == 0:
            gc.set_threshold(*_saved)
            gc.unfreeze()

    def due(self) -> bool:
        """Have the memory blocks in use doubled since the last full collection?"""
        return sys.getallocatedblocks() > self._limit

    def collect_fully(self) -> tuple[int, float]:
        """Unfreeze, collect every generation, freeze again: the objects collected, and the
        seconds it took (the whole pause)."""
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        self._limit = max(FLOOR, 2 * sys.getallocatedblocks())
        self.full_collections += 1
        return collected, time.perf_counter() - started

    def tend(self) -> None:
        """If the young generation is full: collect it, or only freeze it while recent
        collections found nothing."""
        if len(gc.get_objects(0)) < self.young:
            return
        if self._skip:
            self._skip -= 1
            self.young_frozen += 1
            gc.freeze()
        else:
            gc.collect(0)

    async def watch(self) -> None:
        """Tend the young generation, and a full collection whenever it is due; forever."""
        checked = trio.current_time()
        while True:
            await trio.sleep(YOUNG_EVERY_S)
            self.tend()
            if trio.current_time() - checked < CHECK_S:
                continue
            checked = trio.current_time()
            if self.due():
                collected, seconds = self.collect_fully()
                fields = {"collected": collected, "ms": round(seconds * 1000)}
                log.info("full garbage collection", extra={"fields": fields})

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        # Everything the collection left alive has outlived it: out of the next one's way.
        # (Freezing here is safe: the collection is over, and freezing only moves lists.)
        gc.freeze()
        # Any collection that found garbage says young collections are worth it again.
        # (Python's own also run as generations 1 and 2, on young objects only.)
        if info["collected"]:
            self._dry = self._skip = 0
        elif info["generation"] == 0:
            self._dry += 1
            self._skip = min((1 << min(self._dry, 8)) - 1, MAX_SKIP)
        if self.on_pause is not None:
            self.on_pause(time.perf_counter() - self._started)
