"""Resend of pushes not covered by `recv` (spec §8), on trio's MockClock."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import trio
import trio.testing

from tests.helpers.client import token
from tests.helpers.memory import open_raw_client

from .test_timeouts import hello, start

if TYPE_CHECKING:
    from pathlib import Path

    from imcore.wsclient import RawWebSocket

DM = "dm:alice:bob"


async def send_one(ws: RawWebSocket) -> None:
    frame = {"op": "send", "id": 2, "conv": DM, "cmid": "m1", "body": "hi"}
    await ws.send(json.dumps(frame).encode(), 0x1)


async def pushes_until_closed(
    ws: RawWebSocket, clock: trio.testing.MockClock, times: list[float]
) -> None:
    """Record the times (since now) at which `msg` pushes arrive, until the server closes."""
    start = clock.current_time()
    try:
        while True:
            frames = [json.loads(data) for data in await ws.receive()]
            times += [clock.current_time() - start for f in frames if f["op"] == "msg"]
    except ConnectionError:
        return


async def test_pushes_are_resent_at_doubling_intervals_then_the_connection_closes(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await start(nursery, tmp_path, resend_ms=5000, resend_max=4, heartbeat_ms=600_000)
    alice, bob = await open_raw_client(listener), await open_raw_client(listener)
    await hello(alice, "alice")
    await hello(bob, "bob")
    await send_one(alice)
    times: list[float] = []
    await pushes_until_closed(bob, autojump_clock, times)
    assert bob.closed_code == 4000
    assert [round(t) for t in times] == [0, 5, 15, 35, 75]
    assert 155 <= autojump_clock.current_time() <= 156


async def test_a_client_that_sends_recv_gets_no_resend(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await start(nursery, tmp_path, resend_ms=5000, heartbeat_ms=600_000)
    alice, bob = await open_raw_client(listener), await open_raw_client(listener)
    await hello(alice, "alice")
    await hello(bob, "bob")
    await send_one(alice)
    pushes = 0
    with trio.move_on_after(300):
        while True:
            for data in await bob.receive():
                frame = json.loads(data)
                if frame["op"] == "msg":
                    pushes += 1
                    recv = {"op": "recv", "conv": DM, "seq": frame["seq"]}
                    await bob.send(json.dumps(recv).encode(), 0x1)
    assert pushes == 1
    assert bob.closed_code is None


async def test_recv_false_in_hello_turns_resends_off(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = await start(nursery, tmp_path, resend_ms=5000, heartbeat_ms=600_000)
    alice, bob = await open_raw_client(listener), await open_raw_client(listener)
    await hello(alice, "alice")
    frame = {"op": "hello", "id": 1, "v": 1, "token": token("bob"), "device": "d", "recv": False}
    await bob.send(json.dumps(frame).encode(), 0x1)
    await bob.receive()
    await send_one(alice)
    times: list[float] = []
    with trio.move_on_after(300):
        await pushes_until_closed(bob, autojump_clock, times)
    assert bob.closed_code is None
    assert [round(t) for t in times] == [0]
