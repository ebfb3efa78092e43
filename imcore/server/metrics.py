"""Prometheus metrics of one server (prometheus-client), in a registry of its own so that
several servers in one process (tests) never collide. Updated per message, never per
recipient: a push counts its recipients in one `inc(n)`."""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """Every metric the server exports at /metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge("imcore_connections", "Live WebSocket connections", registry=r)
        self.frames_in = Counter("imcore_frames_in", "Frames received, by op", ["op"], registry=r)
        self.frames_out = Counter("imcore_frames_out", "Frames sent, by op", ["op"], registry=r)
        # Each label's child, made once: `labels()` takes a lock and builds a key per call,
        # and these are counted for every frame.
        self._frames_in = {op: self.frames_in.labels(op) for op in (*KNOWN_OPS, "other")}
        self._frames_out = {kind: self.frames_out.labels(op) for kind, op in OP_OF.items()}
        self._frames_out_other = self.frames_out.labels("other")
        self.sends = Counter("imcore_sends", "Messages sequenced (not dups)", registry=r)
        self.deliveries = Counter("imcore_deliveries", "Pushes queued for connections", registry=r)
        self.errors = Counter("imcore_errors", "error frames sent, by code", ["code"], registry=r)
        self.closes = Counter(
            "imcore_closes", "Connections closed, by close code", ["code"], registry=r
        )
        self.fanout_recipients = Histogram(
            "imcore_fanout_recipients", "Recipients per push", buckets=FANOUT_BUCKETS, registry=r
        )
        self.fanout_seconds = Histogram(
            "imcore_fanout_seconds", "Time to queue one push", buckets=LATENCY_BUCKETS, registry=r
        )
        self.ack_seconds = Histogram(
            "imcore_ack_seconds",
            "From a write's arrival to its reply being queued (includes the commit)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "imcore_fsync_seconds",
            "Write + fsync of one commit batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_batch = Histogram(
            "imcore_outbox_batch_frames",
            "Frames per writer wake-up (what the socket did not take at once, and what followed)",
            buckets=(1, 2, 5, 10, 50, 100, 500, 1_000, 5_000),
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
        sends = self.registry.get_sample_value("imcore_sends_total") or 0.0
        deliveries = self.registry.get_sample_value("imcore_deliveries_total") or 0.0
        last_sends, last_deliveries = self._last
        self.rates = {
            "sends": (sends - last_sends) / seconds,
            "deliveries": (deliveries - last_deliveries) / seconds,
        }
        self._last = (sends, deliveries)

    def frame_in(self, op: str | None) -> None:
        # Only known ops become labels, so a client cannot grow the metric without bound.
        frames_in = self._frames_in
        (frames_in.get(op or "other") or frames_in["other"]).inc()

    def frame_out(self, frame: object, count: int = 1) -> None:
        self._frames_out.get(type(frame), self._frames_out_other).inc(count)
