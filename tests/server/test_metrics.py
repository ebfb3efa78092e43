"""The loop's own counters and histograms export what prometheus-client's types would."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.registry import Collector

from imcore.server.metrics import LATENCY_BUCKETS, LoopHistogram, Metrics

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric


def samples(
    registry: CollectorRegistry, name: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


def test_a_loop_histogram_exports_what_a_prometheus_histogram_would() -> None:
    values = [0.0, 0.0005, 0.0007, 0.001, 0.3, 2.5, 2.6, 100.0]  # on, between, over bounds
    reference = CollectorRegistry()
    expected = Histogram("h", "doc", buckets=LATENCY_BUCKETS, registry=reference)
    ours = LoopHistogram(LATENCY_BUCKETS)
    for value in values:
        expected.observe(value)
        ours.observe(value)
    registry = CollectorRegistry()

    class One(Collector):
        def collect(self) -> Iterator[Metric]:
            yield ours.family("h", "doc")

    registry.register(One())
    assert samples(registry, "h") == samples(reference, "h")


def test_counts_of_the_loop_are_in_the_exposition() -> None:
    metrics = Metrics()
    metrics.frame_in("send")
    metrics.frame_in("no such op")
    metrics.sends.inc(3)
    metrics.ack_seconds.observe(0.002)
    text = generate_latest(metrics.registry).decode()
    assert 'imcore_frames_in_total{op="send"} 1.0' in text
    assert 'imcore_frames_in_total{op="other"} 1.0' in text
    assert "imcore_sends_total 3.0" in text
    assert 'imcore_ack_seconds_bucket{le="0.0025"} 1.0' in text
    assert "imcore_ack_seconds_count 1.0" in text
