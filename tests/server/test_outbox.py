"""The outbox: bounded in frames and bytes, several frames queued as one put."""

from __future__ import annotations

from imcore.core import CloseCode
from imcore.server.outbox import Outbox


def test_put_many_counts_every_frame_against_the_limit() -> None:
    outbox = Outbox(max_frames=4, max_bytes=1000)
    outbox.put_many([b"a", b"b", b"c"], 3)
    assert outbox.statistics() == {"frames": 3, "bytes": 3}
    outbox.put_many([b"d", b"e"], 2)
    assert outbox.close_code is CloseCode.SLOW_CONSUMER
    assert outbox.statistics() == {"frames": 0, "bytes": 0}


def test_put_many_into_an_empty_outbox_is_bounded_like_single_puts() -> None:
    big = Outbox(max_frames=10, max_bytes=100)
    big.put_many([b"x" * 500], 500)  # one frame larger than the limit is still taken
    assert big.close_code is None
    two = Outbox(max_frames=10, max_bytes=100)
    two.put_many([b"x" * 60, b"y" * 60], 120)  # the second would not fit after the first
    assert two.close_code is CloseCode.SLOW_CONSUMER
