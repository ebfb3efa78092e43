"""A concurrent chat workload that records what the server promised, and the checks of it.

Several users with two devices each send pipelined messages to DMs and a group, while every
device records the acks and pushes it got, and acknowledges with `recv` each direct message
pushed to it. After a crash and restart, `check()` reads every conversation back and
verifies the promises of spec §7, and that no `delivered` push went back (spec §8).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket

from tests.helpers.client import Client, open_client

if TYPE_CHECKING:
    from imcore.server import RunningServer

USERS = ("u0", "u1", "u2")
DEVICES = ("phone", "laptop")
GROUP = "g:crash"
CONVS = {
    "u0": ("dm:u0:u1", "dm:u0:u2", GROUP),
    "u1": ("dm:u0:u1", "dm:u1:u2", GROUP),
    "u2": ("dm:u0:u2", "dm:u1:u2", GROUP),
}
READER = {"dm:u0:u1": "u0", "dm:u0:u2": "u0", "dm:u1:u2": "u1", GROUP: "u0"}
Key = tuple[str, str, str]  # (user, conv, cmid)


@dataclass
class Ledger:
    sent: dict[Key, Any] = field(default_factory=dict)  # body of every send made
    acked: dict[Key, tuple[int, int]] = field(default_factory=dict)  # (seq, ts) promised
    acked_at: dict[Key, float] = field(default_factory=dict)  # trio time of the ack
    received: list[dict[str, Any]] = field(default_factory=list)  # every msg push seen
    #: (user, conv) -> the highest `delivered` seq pushed to that user
    delivered: dict[tuple[str, str], int] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: list[tuple[int, trio.Event]] = field(default_factory=list)

    def unacked(self) -> list[Key]:
        return [k for k in self.sent if k not in self.acked]

    def ack(self, key: Key, seq: int, ts: int) -> None:
        """Record the server's promise for `key`, and wake whoever waits for this many."""
        self.acked[key] = (seq, ts)
        self.acked_at[key] = trio.current_time()
        count = len(self.acked)
        for at_least, event in self._waiting:
            if count >= at_least:
                event.set()

    async def wait_acked(self, at_least: int) -> None:
        """Return once `at_least` distinct sends have been acked in all."""
        if len(self.acked) < at_least:
            event = trio.Event()
            self._waiting.append((at_least, event))
            await event.wait()
            self._waiting.remove((at_least, event))


async def set_up(server: RunningServer) -> None:
    async with open_client(server, "u0") as owner:
        reply = await owner.request(op="group.create", conv=GROUP, members=["u1", "u2"])
        assert reply["op"] == "ok", reply


async def _device(server: RunningServer, user: str, device: str, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    window = trio.Semaphore(16)
    pending: dict[int, Key] = {}
    shown: dict[str, int] = {}  # conv -> the last `delivered` seq pushed here
    async with open_client(server, user, device=device) as client:

        async def read() -> None:
            while True:
                data = await client.ws.get_message()
                frame = client.decode(data)
                if frame["op"] == "ack":
                    ledger.ack(pending.pop(frame["id"]), frame["seq"], frame["ts"])
                    window.release()
                elif frame["op"] == "msg":
                    ledger.received.append(frame)
                    if frame["conv"].startswith("dm:") and frame["from"] != user:
                        await client.send_frame(op="recv", conv=frame["conv"], seq=frame["seq"])
                elif frame["op"] == "delivered":
                    conv, seq = frame["conv"], frame["seq"]
                    assert seq > shown.get(conv, 0), "a connection's delivered went back"
                    shown[conv] = seq
                    ledger.delivered[user, conv] = max(seq, ledger.delivered.get((user, conv), 0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for i in itertools.count():
                await window.acquire()
                conv = rng.choice(CONVS[user])
                cmid = f"{device}-{seed}-{i}"
                body = {"from": user, "i": i, "pad": "x" * rng.randrange(0, 200)}
                frame_id = next(ledger.ids)
                key = (user, conv, cmid)
                ledger.sent[key] = body
                pending[frame_id] = key
                await client.send_frame(op="send", id=frame_id, conv=conv, cmid=cmid, body=body)


async def run_until_killed(server: RunningServer, ledger: Ledger, round_no: int) -> None:
    """Drive every device until the connection dies (the test kills the server)."""

    async def one(user: str, device: str, seed: int) -> None:
        try:
            await _device(server, user, device, ledger, seed)
        except* (
            trio_websocket.ConnectionClosed,
            trio_websocket.HandshakeError,
            trio.BrokenResourceError,
            OSError,
        ):
            pass  # the server was killed

    async with trio.open_nursery() as nursery:
        for n, (user, device) in enumerate(itertools.product(USERS, DEVICES)):
            nursery.start_soon(one, user, device, round_no * 100 + n)


async def read_log(client: Client, conv: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        after = events[-1]["seq"] if events else 0
        batch = await client.request(op="sync", conv=conv, after=after, limit=1000)
        events += batch["msgs"]
        if not batch["more"]:
            assert (events[-1]["seq"] if events else 0) == batch["head"]
            return events


async def check(
    server: RunningServer, ledger: Ledger, *, lossy: bool = False
) -> tuple[dict[str, list[dict[str, Any]]], list[Key]]:
    """Verify spec §7 against what the ledger recorded.

    Args:
        lossy: acked events may be missing from the end of the log (a power loss under
            `--fsync interval`); those that are present must still be exact.

    Returns:
        The logs read, and the acked keys that are missing (always empty unless `lossy`).
    """
    logs: dict[str, list[dict[str, Any]]] = {}
    for conv, reader in READER.items():
        async with open_client(server, reader, device="checker") as client:
            logs[conv] = await read_log(client, conv)
    all_ts = []
    for conv, events in logs.items():
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), f"{conv}: gaps or duplicates"
        assert all(a["ts"] < b["ts"] for a, b in itertools.pairwise(events)), conv
        all_ts += [e["ts"] for e in events]
    assert len(all_ts) == len(set(all_ts)), "a ts was reused"
    by_seq = {(conv, e["seq"]): e for conv, events in logs.items() for e in events}
    missing = []
    for (user, conv, cmid), (seq, ts) in ledger.acked.items():
        event = by_seq.get((conv, seq))
        if event is None and lossy:
            assert seq > len(logs[conv]), f"{conv}#{seq} lost from the middle of the log"
            missing.append((user, conv, cmid))
            continue
        assert event is not None, f"acked {conv}#{seq} is missing"
        assert (event["from"], event["cmid"], event["ts"]) == (user, cmid, ts)
        assert event["body"] == ledger.sent[(user, conv, cmid)]
    for msg in ledger.received:
        stored = by_seq.get((msg["conv"], msg["seq"]))
        if stored is None and lossy:
            continue
        assert stored == {k: v for k, v in msg.items() if k != "op"}, "a pushed event changed"
    if not lossy:
        for user in USERS:
            async with open_client(server, user, device="checker") as client:
                convs = {c["conv"]: c for c in client.welcome["convs"]}
            for (seen_by, conv), seq in ledger.delivered.items():
                if seen_by == user:
                    assert convs[conv]["peer_delivered"] >= seq, f"{conv}: delivered went back"
    return logs, missing


async def retry(server: RunningServer, ledger: Ledger, keys: list[Key]) -> int:
    """Resend `keys` with their cmids; acked ones must come back as dups. Returns dup count."""
    dups = 0
    for user in USERS:
        mine = [k for k in keys if k[0] == user]
        if not mine:
            continue
        async with open_client(server, user, device="retry") as client:
            for key in mine:
                _, conv, cmid = key
                ack = await client.request(op="send", conv=conv, cmid=cmid, body=ledger.sent[key])
                assert ack["op"] == "ack", ack
                if key in ledger.acked:
                    assert ack["dup"] is True
                    assert (ack["seq"], ack["ts"]) == ledger.acked[key]
                ledger.acked[key] = (ack["seq"], ack["ts"])
                dups += ack["dup"]
    return dups
