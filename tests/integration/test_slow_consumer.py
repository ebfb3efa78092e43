"""A client that stops reading while a group floods (spec §10): closed 4008, others unharmed."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel

from tests.helpers.client import Client, open_client

if TYPE_CHECKING:
    from imcore.server import RunningServer

G = "g:flood"
MEMBERS = 12
MESSAGES = 600
BODY_PAD = "x" * 4000  # the storm must outgrow the stalled reader's outbox and socket buffers


@pytest.fixture
def small_outboxes(settings: dict[str, object]) -> dict[str, object]:
    settings.update(
        outbox_frames=1000, outbox_bytes=1024 * 1024, send_rate=100_000, send_burst=100_000
    )
    return settings


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))]


async def flood(server: RunningServer, sender: Client, readers: list[Client], tag: str) -> float:
    """Send MESSAGES to G; every reader must get them all, in order. Returns p99 latency (s)."""
    latencies: list[float] = []

    async def read(client: Client) -> None:
        seqs: list[int] = []
        while len(seqs) < MESSAGES:
            msg = await client.next_push("msg")
            body = msg.get("body")  # membership events have none
            if isinstance(body, dict) and body.get("tag") == tag:
                seqs.append(msg["seq"])
                latencies.append(time.perf_counter() - msg["body"]["t"])
        assert seqs == list(range(seqs[0], seqs[0] + MESSAGES))

    async with trio.open_nursery() as nursery:
        for client in readers:
            nursery.start_soon(read, client)
        for i in range(MESSAGES):
            body = {"tag": tag, "t": time.perf_counter(), "pad": BODY_PAD}
            await sender.send_frame(op="send", id=f"{tag}{i}", conv=G, cmid=f"{tag}{i}", body=body)
            if i % 50 == 49:
                await trio.lowlevel.checkpoint()  # let the loop breathe, as separate clients would
    return p99(latencies)


async def test_a_reader_that_stalls_is_closed_4008_and_loses_nothing(
    small_outboxes: object, server: RunningServer
) -> None:
    members = [f"m{i}" for i in range(MEMBERS)]
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(open_client(server, m)) for m in members]
            owner, readers = clients[0], clients  # the sender reads its own pushes too
            await owner.request(op="group.create", conv=G, members=members[1:])
            for client in clients:
                await client.next_push("msg")
            baseline = await flood(server, owner, readers, "calm")

            slow_stack = AsyncExitStack()
            slow = await slow_stack.enter_async_context(open_client(server, "slow"))
            await owner.request(op="group.add", conv=G, users=["slow"])
            # the slow client now reads nothing at all while the group floods
            stressed = await flood(server, owner, readers, "storm")
            print(
                f"\nother members' p99 push latency: {baseline * 1000:.1f} ms alone, "
                f"{stressed * 1000:.1f} ms with a stalled reader"
            )
            assert stressed < max(3 * baseline, baseline + 0.05)

            assert await slow.closed_with() == 4008
            await slow_stack.aclose()
            async with open_client(server, "slow") as back:
                (summary,) = back.welcome["convs"]
                head, after, storm = summary["head"], summary["head"] - MESSAGES, []
                while after < head:  # pages that fit a client's 1 MiB frames
                    batch = await back.request(op="sync", conv=G, after=after, limit=100)
                    assert batch["msgs"], batch
                    storm += [m["body"]["tag"] for m in batch["msgs"]]
                    after = batch["msgs"][-1]["seq"]
                assert storm == ["storm"] * MESSAGES
                assert summary["head"] == batch["head"]
