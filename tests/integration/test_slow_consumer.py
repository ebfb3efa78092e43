"""A client too slow for its group's flood (spec §10): at the moment the server decides to
close it, it leaves presence and the fan-out; when it reads again it finds the rest of what
was in flight, then close 4008, and `sync` gives it everything it missed. Everyone else is
unharmed."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.lowlevel
import trio_websocket

from tests.helpers.client import Client, open_client

if TYPE_CHECKING:
    from imcore.server import RunningServer

G = "g:flood"
MEMBERS = 8
MESSAGES = 400
BODY_PAD = "x" * 4000  # the storm must outgrow the slow reader's outbox and socket buffers
#: The slow client's socket receive buffer: small, so the server's side fills fast.
RCVBUF = 4096
#: How long after the flood the slow client's `offline` may come. A bound with a reason: the
#: close is decided during the flood and leaves presence at once; before, the connection
#: stayed online until its close deadline (10 s) ran out.
OFFLINE_WITHIN_S = 3.0


@pytest.fixture
def small_outboxes(settings: dict[str, object]) -> dict[str, object]:
    settings.update(
        outbox_frames=1000,
        outbox_bytes=1024 * 1024,
        send_rate=100_000,
        send_burst=100_000,
        close_timeout_ms=60_000,  # longer than the test: the client is never just dropped
    )
    return settings


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0


async def flood(sender: Client, readers: list[Client], tag: str) -> None:
    """Send MESSAGES to G; every reader must get them all, in order."""

    async def read(client: Client) -> None:
        seqs: list[int] = []
        while len(seqs) < MESSAGES:
            msg = await client.next_push("msg")
            body = msg.get("body")  # membership events have none
            if isinstance(body, dict) and body.get("tag") == tag:
                seqs.append(msg["seq"])
        assert seqs == list(range(seqs[0], seqs[0] + MESSAGES))

    async with trio.open_nursery() as nursery:
        for client in readers:
            nursery.start_soon(read, client)
        for i in range(MESSAGES):
            body = {"tag": tag, "pad": BODY_PAD}
            await sender.send_frame(op="send", id=f"{tag}{i}", conv=G, cmid=f"{tag}{i}", body=body)
            if i % 50 == 49:
                await trio.lowlevel.checkpoint()  # let the loop breathe, as separate clients would


async def dm_acks(sender: Client, stop: trio.Event, latencies: list[float]) -> None:
    """A bystander's direct messages, one at a time, until `stop`."""
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        ack = await sender.request(op="send", conv="dm:x:y", cmid=f"dm{i}", body=i)
        assert ack["op"] == "ack", ack
        latencies.append(time.perf_counter() - started)
        i += 1


async def storm_bodies(server: RunningServer, after: int) -> list[str]:
    """What a reconnecting `slow` syncs of G after seq `after`: the tags of the storm."""
    async with open_client(server, "slow", device="again") as back:
        (summary,) = [c for c in back.welcome["convs"] if c["conv"] == G]
        tags: list[str] = []
        while after < summary["head"]:  # pages that fit a client's 1 MiB frames
            batch = await back.request(op="sync", conv=G, after=after, limit=100)
            assert batch["msgs"], batch
            tags += [m["body"]["tag"] for m in batch["msgs"] if isinstance(m.get("body"), dict)]
            after = batch["msgs"][-1]["seq"]
        return tags


async def read_until_closed(
    client: Client, pause_s: float, hurry: trio.Event
) -> tuple[int | None, list[Any]]:
    """Read every push, pausing `pause_s` after each until `hurry` is set, until the server
    closes. Returns the close code (1006 for a connection dropped without a close frame) and
    the pushes."""
    pushes: list[Any] = []
    try:
        while True:
            pushes.append(await client.next_push())
            if pause_s and not hurry.is_set():
                await trio.sleep(pause_s)  # the slowness under test, not a wait for an event
    except trio_websocket.ConnectionClosed as closed:
        return (None if closed.reason is None else closed.reason.code), pushes


async def slow_during_flood(
    slow: Client,
    owner: Client,
    clients: list[Client],
    carol: Client,
    x: Client,
    pause_s: float | None,
) -> tuple[int | None, list[Any]]:
    """`slow` reads nothing at all, or a push every `pause_s` (far slower than the flood
    comes, even on a loaded machine), while the group floods; once it is offline it reads
    everything, at full speed, until the server closes it. Returns what `read_until_closed`
    does."""
    result: list[tuple[int | None, list[Any]]] = []
    latencies: list[float] = []
    hurry = trio.Event()

    async def trickling() -> None:
        result.append(await read_until_closed(slow, pause_s or 0, hurry))

    async with trio.open_nursery() as nursery:
        if pause_s is not None:
            nursery.start_soon(trickling)
        stop = trio.Event()
        nursery.start_soon(dm_acks, x, stop, latencies)
        await flood(owner, clients, "storm")
        flooded = time.perf_counter()
        with trio.fail_after(OFFLINE_WITHIN_S):
            offline = await carol.next_push("presence")
        print(f"\nslow's offline came {time.perf_counter() - flooded:.3f} s after the flood")
        assert offline["online"] is False
        hurry.set()
        stop.set()
    print(f"bystander DM ack p99 in the flood: {p99(latencies) * 1000:.1f} ms ({len(latencies)})")
    if pause_s is None:  # now it reads again
        await trickling()
    (outcome,) = result
    return outcome


@pytest.mark.parametrize("pause_s", [None, 0.1], ids=["stops-reading", "trickles"])
async def test_a_slow_reader_leaves_at_once_gets_4008_after_its_frames_and_loses_nothing(
    small_outboxes: object, server: RunningServer, pause_s: float | None
) -> None:
    members = [f"m{i}" for i in range(MEMBERS)]
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(open_client(server, m, recv=False)) for m in members
            ]
            owner = clients[0]  # the sender reads its own pushes too
            x = await stack.enter_async_context(open_client(server, "x"))
            await stack.enter_async_context(open_client(server, "y", recv=False))
            carol = await stack.enter_async_context(open_client(server, "carol"))
            await carol.send_frame(op="watch", users=["slow"])
            assert (await carol.next_push("presence"))["online"] is False

            async with open_client(server, "slow", rcvbuf=RCVBUF, recv=False) as slow:
                assert (await carol.next_push("presence"))["online"] is True
                await owner.request(op="group.create", conv=G, members=[*members[1:], "slow"])
                for client in clients:
                    await client.next_push("msg")
                code, pushes = await slow_during_flood(slow, owner, clients, carol, x, pause_s)

            assert code == 4008  # a close frame after what was in flight: not a reset, not EOF
            got = [p for p in pushes if p["op"] == "msg" and isinstance(p.get("body"), dict)]
            seqs = [p["seq"] for p in got]
            if seqs:  # what was in flight: the storm's beginning, in order
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            last = seqs[-1] if seqs else 1  # seq 1 is the group's creation
            missed = await storm_bodies(server, last)
            assert len(got) + len(missed) == MESSAGES
            assert missed == ["storm"] * len(missed)
            print(f"slow read {len(got)} of the storm before 4008 and synced {len(missed)}")


async def test_a_client_that_asks_and_does_not_read_its_answers_is_closed_4008_too(
    small_outboxes: object, server: RunningServer
) -> None:
    with trio.fail_after(30):
        async with open_client(server, "bob") as bob:
            for i in range(20):
                await bob.request(op="send", conv="dm:bob:slow", cmid=f"m{i}", body=BODY_PAD)
        async with open_client(server, "slow", rcvbuf=RCVBUF) as slow:
            code = None
            try:
                for i in range(200):  # ~80 KB answers, none of them read
                    await slow.send_frame(op="sync", id=i, conv="dm:bob:slow", after=0)
            except trio_websocket.ConnectionClosed as closed:  # it may come before the last
                code = None if closed.reason is None else closed.reason.code
            else:
                code = await slow.closed_with()
            assert code == 4008
