"""The outbox: bounded in frames and bytes, several frames queued as one put, and written
straight to the socket when its writer is idle."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
from trio.testing import wait_all_tasks_blocked

from imcore.server.outbox import Outbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def queued(outbox: Outbox) -> tuple[int, int]:
    stats = outbox.statistics()
    return stats["frames"], stats["bytes"]


def test_a_put_counts_every_frame_against_the_limit() -> None:
    outbox = Outbox(max_frames=4, max_bytes=1000)
    assert outbox.put([b"a", b"b", b"c"], 3)
    assert queued(outbox) == (3, 3)
    assert not outbox.put([b"d", b"e"], 2)  # refused whole: the caller closes with 4008
    assert queued(outbox) == (3, 3)


def test_single_frames_are_bounded_in_bytes_too() -> None:
    outbox = Outbox(max_frames=100, max_bytes=100)
    assert outbox.put_nowait(b"x" * 60)
    assert outbox.put_nowait(b"y" * 40)
    assert not outbox.put_nowait(b"z")  # 101 bytes
    assert queued(outbox) == (2, 100)


def test_a_put_into_an_empty_outbox_is_bounded_like_single_puts() -> None:
    big = Outbox(max_frames=10, max_bytes=100)
    assert big.put_nowait(b"x" * 500)  # one frame larger than the limit is still taken
    two = Outbox(max_frames=10, max_bytes=100)
    assert not two.put([b"x" * 60, b"y" * 60], 120)  # the second would not fit after the first


class Socket:
    """Takes at most `room` bytes per write, like a non-blocking socket."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written: list[bytes] = []

    def write_now(self, data: bytes) -> int:
        taken = data[: self.room]
        self.written.append(taken)
        return len(taken)


@asynccontextmanager
async def parked_writer(room: int) -> AsyncIterator[tuple[Outbox, Socket, list[list[bytes]]]]:
    """An outbox on a socket that takes `room` bytes a write, whose writer is parked; what
    the writer takes, if it wakes, is in the list."""
    socket = Socket(room)
    outbox = Outbox(max_frames=4, max_bytes=1000, write_now=socket.write_now)
    batches: list[list[bytes]] = []

    async def writer() -> None:
        batches.append(await outbox.get_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await wait_all_tasks_blocked()
        yield outbox, socket, batches
        await wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def test_a_frame_for_an_idle_writer_goes_straight_to_the_socket() -> None:
    async with parked_writer(room=1000) as (outbox, socket, batches):
        outbox.put_nowait(b"one")
        outbox.put([b"two", b"three"], 8)
    assert socket.written == [b"one", b"twothree"]
    assert batches == []  # the writer never woke


async def test_what_the_socket_does_not_take_is_queued_in_order() -> None:
    async with parked_writer(room=2) as (outbox, socket, batches):
        outbox.put_nowait(b"hello")
        outbox.put_nowait(b"world")  # queued behind the rest of "hello", not written
    assert socket.written == [b"he"]
    assert batches == [[b"llo", b"world"]]


def test_no_direct_write_without_a_parked_writer_or_after_a_close() -> None:
    socket = Socket(room=1000)
    outbox = Outbox(max_frames=4, max_bytes=1000, write_now=socket.write_now)
    outbox.put_nowait(b"a")  # the writer is busy (or not started): it writes this itself
    outbox.close(b"CLOSE", keep_queued=True)
    outbox.put_nowait(b"b")  # taken no more
    assert socket.written == []
    assert queued(outbox) == (2, 6)


async def test_a_close_follows_what_is_queued() -> None:
    async with parked_writer(room=2) as (outbox, _, batches):
        outbox.put_nowait(b"hello")  # "he" is on the wire
        outbox.put_nowait(b"world")
        outbox.close(b"CLOSE", keep_queued=True)
    assert batches == [[b"llo", b"world", b"CLOSE"]]


async def test_a_close_that_drops_the_queue_keeps_the_rest_of_a_frame_partly_written() -> None:
    async with parked_writer(room=2) as (outbox, socket, batches):
        outbox.put_nowait(b"hello")  # "he" is on the wire
        outbox.put_nowait(b"world")
        outbox.close(b"CLOSE", keep_queued=False)
    assert socket.written == [b"he"]
    assert batches == [[b"llo", b"CLOSE"]]  # the close frame follows a whole frame


async def test_a_run_that_the_socket_does_not_take_is_bounded_like_any_put() -> None:
    async with parked_writer(room=0) as (outbox, socket, batches):
        outbox.max_bytes = 100
        assert outbox.put([b"x" * 60, b"y" * 60], 120)  # tried on the socket: one piece left
        assert not outbox.put([b"z"], 1)
    assert socket.written == [b""]
    assert batches == [[b"x" * 60 + b"y" * 60]]


async def test_what_the_writer_has_in_flight_counts_against_the_bounds() -> None:
    async with parked_writer(room=0) as (outbox, _, batches):
        outbox.max_bytes = 100
        assert outbox.put_nowait(b"x" * 60)  # the socket takes none: the writer wakes ...
        await wait_all_tasks_blocked()
        assert batches == [[b"x" * 60]]  # ... and is still writing it
        assert outbox.put_nowait(b"y" * 30)  # one frame into an empty queue: always taken
        assert not outbox.put_nowait(b"z" * 20)  # 60 in flight + 30 + 20 > 100
        assert outbox.statistics() == {
            "frames": 1,
            "bytes": 30,
            "in_flight_frames": 1,
            "in_flight_bytes": 60,
        }
