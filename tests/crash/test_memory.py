"""Memory stays bounded under abuse: 10,000 garbage frames do not grow the server's RSS."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from tests.helpers.process import ServerProcess
from tools.wsload import OP_TEXT, RawWebSocket

if TYPE_CHECKING:
    from imcore.server import RunningServer

FRAMES = 10_000


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def garbage(server: RunningServer, frames: int) -> int:
    """Send `frames` undecodable frames, reconnecting whenever the server closes (4002)."""
    sent = closes = 0
    while sent < frames:
        ws = await RawWebSocket.connect(server.host, server.port)
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


async def test_ten_thousand_garbage_frames_do_not_grow_memory(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    with trio.fail_after(60):
        try:
            running = await server.start()
            assert server.process is not None
            await garbage(running, 1_000)  # warm up whatever is allocated once
            before = rss(server.process.pid)
            closes = await garbage(running, FRAMES)
            grown = rss(server.process.pid) - before
            print(
                f"\nRSS grew {grown / 1024:.0f} KiB over {FRAMES} garbage frames "
                f"({closes} connections closed with 4002)"
            )
            assert closes >= FRAMES // 150 - 2  # 101 answered frames, and the batch in flight
            assert grown < 4 * 1024 * 1024
        finally:
            await server.aclose()
