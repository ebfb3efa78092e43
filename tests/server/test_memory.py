"""Memory stays bounded under abuse: garbage frames leave nothing behind in the server.

The server runs in this process on trio's MockClock over in-memory streams, and what it
keeps is read from tracemalloc after a full collection, not from the RSS of a process:
the RSS moved with the allocator's arenas and with when the GC policy (`collector.py`)
happened to freeze or collect the young generation, which is timing, not a leak.
"""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
from typing import TYPE_CHECKING

import trio
import trio.testing

from imcore.config import build
from imcore.server import serve
from imcore.wsframes import OP_TEXT
from tests.helpers.core import SECRET
from tests.helpers.files import InlineFiles
from tests.helpers.memory import MemoryListener, open_raw_client

if TYPE_CHECKING:
    from pathlib import Path

FRAMES = 10_000
#: Every deadline of a closed connection (the hello timeout, 10 s) has passed after this:
#: until then its stale entry in the timer heap keeps the connection alive, by design.
SETTLE_S = 60
#: What the second round of FRAMES garbage frames may leave traced. Measured: 9-14 KiB
#: (blocks that free lists keep, which tracemalloc still counts). A leak of one 8-byte
#: reference per frame would be 78 KiB, of 1 KiB per closed connection 66 KiB.
BOUND = 48 * 1024


async def garbage(listener: MemoryListener, frames: int) -> int:
    """Send `frames` undecodable frames, reconnecting whenever the server closes (4002)."""
    sent = closes = 0
    while sent < frames:
        ws = await open_raw_client(listener)
        with contextlib.suppress(ConnectionError, trio.BrokenResourceError):
            while sent < frames:
                await ws.send_many([b"{not json" * 20] * 50, OP_TEXT)
                sent += 50
                answered = 0
                while answered < 50:  # one bad_frame error each, then the close
                    answered += len(await ws.receive())
        closes += ws.closed_code == 4002
        await ws.aclose()
    return closes


def traced() -> int:
    """Bytes traced now, after a full collection (frozen objects included)."""
    gc.unfreeze()  # the server's collector freezes survivors; collect them too
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_ten_thousand_garbage_frames_leave_nothing_behind(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryListener()
    config = build({"data_dir": tmp_path, "auth_secret": SECRET, "admin_port": 0})

    async def run(task_status: trio.TaskStatus[object]) -> None:
        await serve(config, listeners=[listener], files=InlineFiles(), task_status=task_status)

    await nursery.start(run)
    tracemalloc.start()
    try:
        # A first round makes whatever is made once (caches, free lists, grown tables),
        # traced too: a block made before tracing and replaced during it would count as new.
        await garbage(listener, FRAMES)
        await trio.sleep(SETTLE_S)
        before = traced()
        closes = await garbage(listener, FRAMES)
        await trio.sleep(SETTLE_S)
        grown = traced() - before
    finally:
        tracemalloc.stop()
    print(f"\n{grown / 1024:.1f} KiB left traced by {FRAMES} garbage frames ({closes} closes)")
    assert closes >= FRAMES // 150 - 2  # 4002 after 101 answered frames, and the batch in flight
    assert grown < BOUND
