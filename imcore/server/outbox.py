"""Outbox: the one bounded buffer between the fan-out and a connection's socket.

It never blocks the producer: `put` either queues the frames or, when the connection is too
slow to drain them, refuses them and says so; the connection then closes with 4008 (spec
§10). The client loses nothing by that: it resumes with `sync`.

When nothing is queued and the writer is parked, frames are handed straight to the socket
(`write_now`) instead: that costs one system call, where a wake-up of the writer costs a trip
through the scheduler for every recipient of every message. Only what the socket does not
take is queued. Order is kept because a direct write happens only while the writer has
nothing of its own in flight.

A close ends the outbox: after `close(last)` nothing more is taken, and `last` (the close
frame) is the final thing written, after what was in flight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

Payload = bytes  # whole pre-framed WebSocket messages


class Outbox:
    """A bounded queue of encoded frames, ended by a close.

    Args:
        max_frames: frames queued at most (not counting the writer's batch in flight).
        max_bytes: bytes queued or in flight at most; one frame larger than this is still
            accepted into an empty queue, so a large reply is never refused.
        write_now: writes what the socket takes without waiting and says how many bytes
            that was (0 on any error: the writer meets the error on its next write).
    """

    __slots__ = (
        "_bytes",
        "_flight_bytes",
        "_flight_frames",
        "_items",
        "_partial",
        "_waiter",
        "closed",
        "max_bytes",
        "max_frames",
        "write_now",
    )

    def __init__(
        self, max_frames: int, max_bytes: int, write_now: Callable[[bytes], int] | None = None
    ) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._items: list[Payload] = []
        self._bytes = 0
        # The writer's current batch: taken from the queue but not yet on the socket. Its
        # bytes count against `max_bytes`, or a client that reads a little now and then
        # would hold up to twice that (a batch in flight, and a full queue behind it).
        # Frames in flight do not count against `max_frames`: that bounds the queue's
        # length, and counting a reader's batch twice halved what a busy one may lag.
        self._flight_frames = 0
        self._flight_bytes = 0
        self._partial = False  # the first item is the rest of a frame partly written already
        self._waiter: trio.lowlevel.Task | None = None  # the writer, while it waits
        self.closed = False  # `close` was called: nothing more is taken
        self.write_now = write_now

    def put(self, payloads: list[Payload], size: int) -> bool:
        """Queue whole frames of `size` bytes in all (or write them now, see the module).

        Returns:
            False if they do not fit: the connection is too slow (close it with 4008).
            True otherwise, also once closed (then they are dropped: the client syncs).
        """
        if self.closed:
            return True
        items = self._items
        if not items and self._waiter is not None and self.write_now is not None:
            data = payloads[0] if len(payloads) == 1 else b"".join(payloads)
            sent = self.write_now(data)
            if sent == size:
                return True
            payloads, size, self._partial = [data[sent:]], size - sent, sent > 0
        # One admission rule: a single frame always fits an empty queue (a large reply is
        # never refused); anything else must fit both bounds, the bytes with what is in flight.
        if (items or len(payloads) > 1) and (
            len(items) + len(payloads) > self.max_frames
            or self._flight_bytes + self._bytes + size > self.max_bytes
        ):
            return False
        was_empty = not items
        items.extend(payloads)
        self._bytes += size
        if was_empty:
            self._wake()
        return True

    def put_nowait(self, payload: Payload) -> bool:
        """`put` of one frame."""
        return self.put([payload], len(payload))

    def close(self, last: Payload, *, keep_queued: bool) -> None:
        """End the outbox with `last`, written after what is in flight; nothing more is taken.

        Args:
            last: the final bytes (the close frame; empty for none).
            keep_queued: keep the whole frames queued, or drop them. The rest of a frame
                already partly on the wire is always kept, or `last` would land inside it.
        """
        if self.closed:
            return
        self.closed = True
        if not keep_queued:
            self._items = self._items[:1] if self._partial else []
            self._bytes = sum(map(len, self._items))
        if last:
            self._items.append(last)
            self._bytes += len(last)
        self._wake()

    def abandon(self) -> None:
        """The socket is gone: drop everything and take nothing more (not even directly)."""
        self.closed = True
        self.write_now = None
        self._items, self._bytes = [], 0

    async def get_batch(self) -> list[Payload]:
        """Wait for frames or a close; return everything queued (empty when only closed).
        One task (the connection's writer) calls this, once it has written the last batch:
        the batch returned is in flight until the next call."""
        self._flight_frames = self._flight_bytes = 0
        while not self._items and not self.closed:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        batch, self._items = self._items, []
        self._flight_frames, self._flight_bytes = len(batch), self._bytes
        self._bytes = 0
        self._partial = False
        return batch

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def statistics(self) -> dict[str, int]:
        """Frames and bytes queued, and in flight (taken by the writer, not yet written)."""
        return {
            "frames": len(self._items),
            "bytes": self._bytes,
            "in_flight_frames": self._flight_frames,
            "in_flight_bytes": self._flight_bytes,
        }
