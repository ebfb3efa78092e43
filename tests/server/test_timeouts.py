"""Time-dependent behaviour of the shell, on trio's MockClock over in-memory streams."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imcore.config import build
from imcore.server import serve
from tests.helpers.client import token
from tests.helpers.core import SECRET
from tests.helpers.memory import MemoryListener, open_memory_client

if TYPE_CHECKING:
    from pathlib import Path

    import trio
    import trio.testing


async def test_no_hello_within_the_timeout_closes_4001(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryListener()
    config = build({"data_dir": tmp_path, "auth_secret": SECRET})
    await nursery.start(
        lambda task_status: serve(config, listeners=[listener], task_status=task_status)
    )
    async with open_memory_client(listener) as silent, open_memory_client(listener) as polite:
        start = autojump_clock.current_time()
        welcome = await polite.request(op="hello", v=1, token=token("alice"), device="d")
        assert welcome["op"] == "welcome"
        assert await silent.closed_with() == 4001
        assert 10 <= autojump_clock.current_time() - start < 11
        assert (await polite.request(op="ping"))["op"] == "pong"
