"""Receipts never go back: not across a reconnect, a SIGTERM restart or a kill -9 (spec §8).

A sender who reconnects learns from `welcome.convs` where the peer of a direct conversation
has received (`peer_delivered`) and read (`peer_read`) up to. Whatever `delivered` or `read`
push a client was shown before the server went down, the positions after the restart are at
least as far: the push is made by applying the committed record, never before.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio_websocket

from tests.helpers.client import Client, open_client
from tests.helpers.process import ServerProcess, run_admin

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from imcore.server import RunningServer

DM = "dm:alice:bob"
#: Messages per round: within the send burst (100), so the sender is never rate limited.
MESSAGES = 90
#: The kill comes once the sender has been shown this many `delivered` pushes in a round.
SHOWN = 25
ROUNDS = 3


def peer_positions(client: Client, frame: dict[str, Any] | None = None) -> tuple[int, int]:
    """(peer_read, peer_delivered) of the DM in `welcome`, or in a `convs` reply."""
    convs = (frame or client.welcome)["convs"]
    (dm,) = [c for c in convs if c["conv"] == DM]
    return dm["peer_read"], dm["peer_delivered"]


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
async def test_acknowledged_receipts_survive_a_restart(tmp_path: Path, stop: str) -> None:
    server = ServerProcess(tmp_path)
    with trio.fail_after(60):
        try:
            running = await server.start()
            async with open_client(running, "alice") as alice:
                for i in range(5):
                    await alice.request(op="send", conv=DM, cmid=f"m{i}", body=i)
            async with open_client(running, "bob") as bob:
                # each ok is released once the position it covers is committed
                assert (await bob.request(op="recv", conv=DM, seq=4))["op"] == "ok"
                assert (await bob.request(op="read", conv=DM, seq=3))["op"] == "ok"
            if stop == "sigterm":
                server.terminate()
                code, log = await server.exit()
                assert code == 0, log
            else:
                server.kill()
                await server.exit()
            running = await server.start()
            async with open_client(running, "alice", device="laptop") as alice:
                assert peer_positions(alice) == (3, 4)
                assert peer_positions(alice, await alice.request(op="convs")) == (3, 4)
            async with open_client(running, "bob") as bob:
                assert peer_positions(bob) == (0, 0)  # alice neither sent recv nor read
        finally:
            await server.aclose()


@pytest.mark.parametrize("fsync", ["always", "interval"])
async def test_no_receipt_a_client_was_shown_is_taken_back_by_kill_9(
    tmp_path: Path, fsync: str
) -> None:
    server = ServerProcess(tmp_path, "--fsync", fsync)
    shown = {"delivered": 0, "read": 0}  # the highest of each pushed to alice, all rounds
    with trio.fail_after(120):
        try:
            running = await server.start()
            for round_no in range(ROUNDS):
                pushes = await _receive_until_killed(running, server, round_no)
                assert sum(p["op"] == "delivered" for p in pushes) >= SHOWN
                for push in pushes:
                    assert push["seq"] >= shown[push["op"]], "a push went back before the kill"
                    shown[push["op"]] = push["seq"]
                await server.exit()
                running = await server.start()
                async with open_client(running, "alice", device="laptop") as alice:
                    peer_read, peer_delivered = peer_positions(alice)
                    (dm,) = [c for c in alice.welcome["convs"] if c["conv"] == DM]
                print(
                    f"fsync={fsync} round {round_no}: shown delivered {shown['delivered']} "
                    f"read {shown['read']}; after kill -9 {peer_delivered} and {peer_read} "
                    f"(head {dm['head']})"
                )
                assert peer_delivered >= shown["delivered"], "a delivered tick went back"
                assert peer_read >= shown["read"], "a read tick went back"
                assert peer_delivered <= dm["head"]
        finally:
            await server.aclose()
    verified = await run_admin("verify", "--data-dir", str(tmp_path))
    assert verified.returncode == 0, verified.stdout.decode()


async def _receive_until_killed(
    running: RunningServer, server: ServerProcess, round_no: int
) -> list[dict[str, Any]]:
    """Alice sends a burst; bob recvs every message as it arrives and reads every fifth;
    the server is killed once alice has been shown SHOWN `delivered` pushes. Returns every
    receipt push alice got, those still on their way at the kill included, in order."""
    pushes: list[dict[str, Any]] = []
    async with (
        open_client(running, "alice") as alice,
        open_client(running, "bob") as bob,
        trio.open_nursery() as nursery,
    ):

        async def bob_receives() -> None:
            while True:
                msg = await bob.next_push("msg")
                await bob.send_frame(op="recv", conv=DM, seq=msg["seq"])
                if msg["seq"] % 5 == 0:
                    await bob.send_frame(op="read", conv=DM, seq=msg["seq"])

        nursery.start_soon(_ignore_closed, bob_receives)
        for i in range(MESSAGES):
            await alice.send_frame(op="send", conv=DM, cmid=f"r{round_no}-{i}", body=i)
        delivered = 0
        try:
            while True:
                push = await alice.next_push()
                if push["op"] in ("delivered", "read"):
                    pushes.append(push)
                if push["op"] == "delivered":
                    delivered += 1
                    if delivered == SHOWN:
                        server.kill()  # once: whatever was pushed until now must survive
        except trio_websocket.ConnectionClosed:
            pass
        nursery.cancel_scope.cancel()
    return pushes


async def _ignore_closed(task: Callable[[], Awaitable[None]]) -> None:
    with contextlib.suppress(trio_websocket.ConnectionClosed):
        await task()
