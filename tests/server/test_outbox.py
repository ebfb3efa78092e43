"""The outbox: bounded in frames and bytes, several frames queued as one put, and written
straight to the socket when its writer is idle."""

from __future__ import annotations

import trio
from trio.testing import wait_all_tasks_blocked

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


class Socket:
    """Takes at most `room` bytes per write, like a non-blocking socket."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[bytes] = []

    def write_now(self, data: bytes) -> int:
        taken = data[: self.room]
        self.written.append(taken)
        return len(taken)


async def parked_writer(outbox: Outbox, batches: list[list[bytes]]) -> None:
    batches.append(await outbox.get_batch())


async def test_a_frame_for_an_idle_writer_goes_straight_to_the_socket() -> None:
    socket = Socket(room=1000)
    outbox = Outbox(max_frames=4, max_bytes=1000, write_now=socket.write_now)
    batches: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(parked_writer, outbox, batches)
        await wait_all_tasks_blocked()
        outbox.put_nowait(b"one")
        outbox.put_many([b"two", b"three"], 8)
        await wait_all_tasks_blocked()
        assert socket.written == [b"one", b"twothree"]
        assert batches == []  # the writer never woke
        nursery.cancel_scope.cancel()


async def test_what_the_socket_does_not_take_is_queued_in_order() -> None:
    socket = Socket(room=2)
    outbox = Outbox(max_frames=4, max_bytes=1000, write_now=socket.write_now)
    batches: list[list[bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(parked_writer, outbox, batches)
        await wait_all_tasks_blocked()
        outbox.put_nowait(b"hello")
        outbox.put_nowait(b"world")  # queued behind the rest of "hello", not written
    assert socket.written == [b"he"]
    assert batches == [[b"llo", b"world"]]


def test_no_direct_write_without_a_parked_writer_or_after_a_close() -> None:
    socket = Socket(room=1000)
    outbox = Outbox(max_frames=4, max_bytes=1000, write_now=socket.write_now)
    outbox.put_nowait(b"a")  # the writer is busy (or not started): it writes this itself
    outbox.close_nowait(CloseCode.GOING_AWAY, "closed")
    outbox.put_nowait(b"b")
    assert socket.written == []
    assert outbox.statistics() == {"frames": 1, "bytes": 1}
