"""Prometheus metrics of one server (prometheus-client), in a registry of its own so that
several servers in one process (tests) never collide. Updated per message, never per
recipient: a push counts its recipients in one `inc(n)`.

The metrics counted for every message (`LoopCounter`, `LoopHistogram`) are plain numbers
that only the event loop touches, read out by a collector of our own at each scrape.
prometheus-client's own types take a lock and run checks on every update, for threads
this loop does not have: that was 5% of the server's CPU under a load of small messages.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..admin_api import HistoryFigures
from ..core.codec import KNOWN_OPS
from ..core.frames import (
    Ack,
    Batch,
    ConvList,
    Delivered,
    Error,
    Event,
    Group,
    Ok,
    Pong,
    Presence,
    ReadReceipt,
    TypingNotice,
    Welcome,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

#: The `op` of each server frame, for labels (without encoding the frame again).
OP_OF: dict[type, str] = {
    Welcome: "welcome",
    Ack: "ack",
    Ok: "ok",
    Group: "group",
    Batch: "batch",
    ConvList: "convs",
    Event: "msg",
    ReadReceipt: "read",
    Delivered: "delivered",
    Pong: "pong",
    Presence: "presence",
    TypingNotice: "typing",
    Error: "error",
}

FANOUT_BUCKETS = (1, 2, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 100_000)
OUTBOX_BUCKETS = (1, 2, 5, 10, 50, 100, 500, 1_000, 5_000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class LoopCounter:
    """A counter updated only from the event loop."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class LoopHistogram:
    """A histogram updated only from the event loop."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a bucket holds values <= its bound
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class _LoopMetrics(Collector):
    """Reads the loop's counters and histograms out at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        # Names known to the registry: it refuses a clash, and filtered scrapes find them.
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for name, documentation, counters in (
            ("imcore_frames_in", "Frames received, by op", m.frames_in),
            ("imcore_frames_out", "Frames sent, by op", m.frames_out),
        ):
            family = CounterMetricFamily(name, documentation, labels=["op"])
            for op, counter in counters.items():
                family.add_metric([op], counter.value)
            yield family
        yield CounterMetricFamily(
            "imcore_sends", "Messages sequenced (not dups)", value=m.sends.value
        )
        yield CounterMetricFamily(
            "imcore_deliveries", "Pushes queued for connections", value=m.deliveries.value
        )
        yield m.fanout_recipients.family("imcore_fanout_recipients", "Recipients per push")
        yield m.fanout_seconds.family("imcore_fanout_seconds", "Time to queue one push")
        yield m.ack_seconds.family(
            "imcore_ack_seconds",
            "From a write's arrival to its reply being queued (includes the commit)",
        )
        yield m.outbox_batch.family(
            "imcore_outbox_batch_frames",
            "Frames per writer wake-up (what the socket did not take at once, and what followed)",
        )
        h = m.history()
        for name, documentation, value in (
            ("imcore_store_bytes", "Bytes of the history store's files", h.store_bytes),
            ("imcore_store_lsn", "The last log record the history store holds", h.store_lsn),
            (
                "imcore_checkpoint_lag",
                "Committed log records the history store does not hold yet",
                h.checkpoint_lag,
            ),
            (
                "imcore_hot_tail_bytes",
                "Memory the hot tails hold (budget's measure)",
                h.hot_tail_bytes,
            ),
            ("imcore_hot_tail_events", "Events the hot tails hold", h.hot_tail_events),
        ):
            yield GaugeMetricFamily(name, documentation, value=value)
        yield CounterMetricFamily(
            "imcore_hot_tail_hits", "History pages served from memory alone", value=h.hot_tail_hits
        )
        yield CounterMetricFamily(
            "imcore_hot_tail_misses", "History pages that needed the store", value=h.hot_tail_misses
        )


class Metrics:
    """Every metric the server exports at /metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("imcore_connections", "Live WebSocket connections", registry=r)
        # Counted for every message: plain numbers, read out by `_LoopMetrics`.
        self.frames_in = {op: LoopCounter() for op in (*KNOWN_OPS, "other")}
        self.frames_out = {op: LoopCounter() for op in (*OP_OF.values(), "other")}
        self._frames_out = {kind: self.frames_out[op] for kind, op in OP_OF.items()}
        self._frames_out_other = self.frames_out["other"]
        self.sends = LoopCounter()
        self.deliveries = LoopCounter()
        self.fanout_recipients = LoopHistogram(FANOUT_BUCKETS)
        self.fanout_seconds = LoopHistogram(LATENCY_BUCKETS)
        self.ack_seconds = LoopHistogram(LATENCY_BUCKETS)
        self.outbox_batch = LoopHistogram(OUTBOX_BUCKETS)
        #: the history figures, read at each scrape (the server's admin port sets it)
        self.history: Callable[[], HistoryFigures] = HistoryFigures
        r.register(_LoopMetrics(self))

        self.errors = Counter("imcore_errors", "error frames sent, by code", ["code"], registry=r)
        self.closes = Counter(
            "imcore_closes", "Connections closed, by close code", ["code"], registry=r
        )
        self.fsync_seconds = Histogram(
            "imcore_fsync_seconds",
            "Write + fsync of one commit batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "imcore_gc_pause_seconds",
            "Pauses of the cyclic garbage collector",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Gauge(
            "imcore_event_loop_lag_seconds", "How late the last loop-lag probe woke", registry=r
        )
        self.wal_bytes = Gauge("imcore_wal_bytes_written", "Bytes appended to the log", registry=r)
        self.snapshot_seconds = Histogram(
            "imcore_snapshot_seconds",
            "Time to write a snapshot",
            registry=r,
            buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
        )

        self.recent_writes: deque[float] = deque(maxlen=1024)
        self.rates = {"sends": 0.0, "deliveries": 0.0}
        self._last = (0.0, 0.0)

    def observe_write(self, seconds: float) -> None:
        """One commit batch's write (+ fsync) took `seconds` (called from a worker thread)."""
        self.fsync_seconds.observe(seconds)
        self.recent_writes.append(seconds)

    def write_percentiles_ms(self) -> dict[str, float]:
        recent = sorted(self.recent_writes)
        if not recent:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        n = len(recent)
        return {
            "p50": round(recent[n // 2] * 1000, 3),
            "p99": round(recent[min(n - 1, n * 99 // 100)] * 1000, 3),
            "max": round(recent[-1] * 1000, 3),
        }

    def sample_rates(self, seconds: float) -> None:
        """Turn the counters' growth over the last `seconds` into per-second rates."""
        sends, deliveries = float(self.sends.value), float(self.deliveries.value)
        last_sends, last_deliveries = self._last
        self.rates = {
            "sends": (sends - last_sends) / seconds,
            "deliveries": (deliveries - last_deliveries) / seconds,
        }
        self._last = (sends, deliveries)

    def frame_in(self, op: str | None) -> None:
        # Only known ops become labels, so a client cannot grow the metric without bound.
        frames_in = self.frames_in
        (frames_in.get(op or "other") or frames_in["other"]).value += 1

    def frame_out(self, frame: object, count: int = 1) -> None:
        self._frames_out.get(type(frame), self._frames_out_other).value += count
