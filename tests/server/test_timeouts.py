"""Time-dependent behaviour of the shell, on trio's MockClock over in-memory streams."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

import trio
import trio.testing

from imcore.config import build
from imcore.server import serve
from imcore.wsframes import OP_TEXT
from tests.helpers.client import token
from tests.helpers.core import SECRET
from tests.helpers.files import InlineFiles
from tests.helpers.memory import MemoryListener, open_memory_client, open_raw_client

if TYPE_CHECKING:
    from pathlib import Path

    from imcore.wsclient import RawWebSocket


async def start(nursery: trio.Nursery, tmp_path: Path, **settings: object) -> MemoryListener:
    listener = MemoryListener()
    config = build({"data_dir": tmp_path, "auth_secret": SECRET, "admin_port": 0, **settings})

    async def run(task_status: trio.TaskStatus[object]) -> None:
        await serve(config, listeners=[listener], files=InlineFiles(), task_status=task_status)

    await nursery.start(run)
    return listener


async def hello(ws: RawWebSocket, user: str = "alice") -> None:
    frame = {"op": "hello", "id": 1, "v": 1, "token": token(user), "device": "d"}
    await ws.send(json.dumps(frame).encode(), OP_TEXT)
    (reply,) = await ws.receive()
    assert json.loads(reply)["op"] == "welcome"


async def closed_with(ws: RawWebSocket) -> int | None:
    with contextlib.suppress(ConnectionError):
        while True:
            await ws.receive()
    return ws.closed_code


async def test_a_client_that_never_answers_pings_is_closed_4000_after_3_heartbeats(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await start(nursery, tmp_path, heartbeat_ms=20_000)
    silent = await open_raw_client(listener)
    silent.answer_pings = False
    await hello(silent)
    start_time = autojump_clock.current_time()
    assert await closed_with(silent) == 4000
    waited = autojump_clock.current_time() - start_time
    assert 60 <= waited <= 80  # 3 heartbeats of silence, noticed at the next heartbeat
    assert silent.pings >= 2


async def test_a_client_that_answers_pings_stays_connected(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await start(nursery, tmp_path, heartbeat_ms=20_000)
    lively = await open_raw_client(listener)
    await hello(lively)
    with trio.move_on_after(300):
        await lively.receive()  # only pings come, answered inside receive()
    assert lively.closed_code is None
    assert lively.pings >= 14


async def test_no_hello_within_the_timeout_closes_4001(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryListener()
    config = build({"data_dir": tmp_path, "auth_secret": SECRET, "admin_port": 0})
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


async def test_a_client_that_does_not_answer_the_close_is_dropped_after_close_timeout_ms(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await start(nursery, tmp_path, heartbeat_ms=20_000, close_timeout_ms=5_000)
    silent = await open_raw_client(listener)
    silent.answer_pings = False
    await hello(silent)
    assert await closed_with(silent) == 4000
    closed_at = autojump_clock.current_time()
    while await silent.stream.receive_some(65536):  # it never answers the close frame
        pass
    assert 5 <= autojump_clock.current_time() - closed_at <= 5.1  # then the server hangs up
