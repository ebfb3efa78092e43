"""Outbox: the one bounded buffer between the fan-out and a connection's socket.

It never blocks the producer: `put_nowait` either queues the frame or, when the connection
is too slow to drain it, drops what is queued and asks for close 4008 (spec §10). The
client loses nothing by that: it resumes with `sync`.

When nothing is queued and the writer is parked, a frame is handed straight to the socket
(`write_now`) instead: that costs one system call, where a wake-up of the writer costs a trip
through the scheduler for every recipient of every message. Only what the socket does not
take is queued. Order is kept because a direct write happens only while the writer has
nothing of its own in flight.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..core import CloseCode

if TYPE_CHECKING:
    from collections.abc import Callable

Payload = bytes  # whole pre-framed WebSocket messages


class Outbox:
    """A bounded queue of encoded frames with a pending close.

    Args:
        max_frames: frames queued at most.
        max_bytes: bytes queued at most; one frame larger than this is still accepted into
            an empty outbox, so a large reply is never refused.
        write_now: writes what the socket takes without waiting and says how many bytes
            that was (0 on any error: the writer meets the error on its next write).
    """

    __slots__ = (
        "_bytes",
        "_items",
        "_partial",
        "_waiter",
        "close_code",
        "close_reason",
        "max_bytes",
        "max_frames",
        "on_close",
        "write_now",
    )

    def __init__(
        self, max_frames: int, max_bytes: int, write_now: Callable[[bytes], int] | None = None
    ) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._items: list[Payload] = []
        self._bytes = 0
        self._partial = False  # the first item is the rest of a frame partly written already
        self._waiter: trio.lowlevel.Task | None = None  # the writer, while it waits
        self.close_code: int | None = None  # a CloseCode, or an RFC 6455 code
        self.close_reason = ""
        self.on_close: Callable[[], None] | None = None  # told once a close is asked for
        self.write_now = write_now

    def put_nowait(self, payload: Payload) -> None:
        """Queue one encoded frame; overflow closes the connection with 4008."""
        if self.close_code is not None:
            return
        size = len(payload)
        items = self._items
        if not items and self._waiter is not None and self.write_now is not None:
            sent = self.write_now(payload)
            if sent == size:
                return
            payload, size, self._partial = payload[sent:], size - sent, sent > 0
        elif items and (len(items) >= self.max_frames or self._bytes + size > self.max_bytes):
            self.close_nowait(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
            return
        items.append(payload)
        self._bytes += size
        if len(items) == 1:
            self._wake()

    def put_many(self, payloads: list[Payload], size: int) -> None:
        """Queue several encoded frames of `size` bytes in all, as `put_nowait` each would."""
        if self.close_code is not None:
            return
        items = self._items
        was_empty = not items
        over_bytes = self._bytes + size > self.max_bytes and (items or len(payloads) > 1)
        if len(items) + len(payloads) > self.max_frames or over_bytes:
            self.close_nowait(CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
            return
        if was_empty and self._waiter is not None and self.write_now is not None:
            data = payloads[0] if len(payloads) == 1 else b"".join(payloads)
            sent = self.write_now(data)
            if sent == size:
                return
            payloads, size, self._partial = [data[sent:]], size - sent, sent > 0
        items.extend(payloads)
        self._bytes += size
        if was_empty:
            self._wake()

    def close_nowait(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Ask the writer to close with `code`: after what is queued, or at once if not `flush`."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        if not flush:
            # Whole frames are dropped; the rest of one already partly on the wire is kept,
            # or the close frame would land inside it.
            kept = self._items[:1] if self._partial else []
            self._items = kept
            self._bytes = sum(map(len, kept))
        self._wake()
        if self.on_close is not None:
            self.on_close()

    async def get_batch(self) -> list[Payload]:
        """Wait for frames or a close; return everything queued (empty when only closing).
        One task (the connection's writer) calls this."""
        while not self._items and self.close_code is None:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        batch, self._items = self._items, []
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
        return {"frames": len(self._items), "bytes": self._bytes}
