"""Durability benchmarks (figures for docs/benchmarks.md; never run as tests).

    python tools/bench_durability.py throughput [--conns 1000] [--seconds 10] [--rounds 3]
                                                [--paced-runs 1]
        Acked sends/s with --fsync always against --fsync never (the baseline) in one
        run, in interleaved rounds, then ack latency at 50% of the durable peak rate.
    python tools/bench_durability.py restart [--events 1000000] [--convs 10000]
        Time to restart on a snapshot of that many events, and the size on disk.
    python tools/bench_durability.py snapshot-stall [--events 1000000] [--convs 10000]
        The longest event-loop gap while a snapshot of that state is written.

The server runs pinned to CPU 0 and the load generator to CPU 1 (taskset); each prints its
CPU seconds, so a generator-bound run says so, and the share of each CPU's time that the
hypervisor took away (steal): on a shared virtual machine that comes in bursts, each one a
stall that the latency tail shows.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imcore.core import Chat, Limits, auth
from imcore.core.snapshot import SnapshotEncoder
from imcore.server.layout import snapshot_dir, snapshot_path, wal_dir
from imcore.server.store import HistoryStore, store_path
from imcore.wsclient import RawWebSocket
from tools.benchlib import (
    SECRET,
    Server,
    message_event,
    percentile,
    pinned,
    print_table,
    process_cpu,
    steal_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

GROUP_SIZE = 10
GROUP_SHARE = 0.2  # of connections that send to groups; the rest are DM pairs
ACK_KEY = cbor2.dumps("op") + cbor2.dumps("ack")  # after a one-byte map header: an ack


# --- the load generator (runs in its own process) ---------------------------------------------


async def generate(
    port: int, conns: int, seconds: float, rate: float, warmup: float
) -> dict[str, Any]:
    """Closed loop (rate 0: each connection sends its next message when acked) or open loop."""
    now_ms = int(time.time() * 1000)
    grouped = int(conns * GROUP_SHARE) // GROUP_SIZE * GROUP_SIZE
    latencies: list[float] = []
    counted = [0]
    start = [0.0]
    ready = trio.Event()
    connected = [0]
    stop = trio.Event()
    senders: list[Callable[[], Awaitable[None]] | None] = [None] * conns

    def conv_of(i: int) -> str:
        if i < grouped:
            return f"g:bench{i // GROUP_SIZE}"
        a, b = sorted((f"u{i}", f"u{i ^ 1 if i ^ 1 >= grouped else i}"))
        return f"dm:{a}:{b}"

    async def connection(i: int) -> None:
        ws = await RawWebSocket.connect("127.0.0.1", port, "/ws", "imcore.v1.cbor")
        token = auth.mint(f"u{i}", SECRET, now_ms=now_ms)
        # This client never sends `recv`, so it opts out of resends (spec §8), as
        # bench_perf's do: the figures are for the write path, not for resending.
        hello = {"op": "hello", "id": 0, "v": 1, "token": token, "device": "d", "recv": False}
        await ws.send(cbor2.dumps(hello))
        await ws.receive()
        conv = conv_of(i)
        if i < grouped and i % GROUP_SIZE == 0:
            members = [f"u{j}" for j in range(i + 1, i + GROUP_SIZE)]
            create = {"op": "group.create", "id": 0, "conv": conv, "members": members}
            await ws.send(cbor2.dumps(create))
        sent_at: dict[int, float] = {}
        acked = trio.Semaphore(1)
        numbers = itertools.count(1)

        async def send_next() -> None:
            n = next(numbers)
            sent_at[n] = time.perf_counter()
            frame = {"op": "send", "id": n, "conv": conv, "cmid": f"{n}", "body": "x" * 100}
            await ws.send(cbor2.dumps(frame))

        async def read() -> None:
            while True:
                for data in await ws.receive():
                    if data[1:8] != ACK_KEY:
                        continue
                    ack = cbor2.loads(data)
                    t = time.perf_counter()
                    sent = sent_at.pop(ack["id"], None)
                    if sent is not None and start[0] and t >= start[0]:
                        latencies.append(t - sent)
                        counted[0] += 1
                    if rate == 0:
                        acked.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            connected[0] += 1
            if connected[0] == conns:
                ready.set()
            await ready.wait()
            if rate:
                senders[i] = send_next  # `pace` sends
                await stop.wait()
            else:
                await trio.sleep(1)  # let the group creations land
                while not stop.is_set():
                    await acked.acquire()
                    await send_next()
            nursery.cancel_scope.cancel()
        await ws.aclose()

    async def pace() -> None:
        """Open loop: connection i sends every conns/rate seconds, at (i % 1000)/1000 of
        that period. One task sends for every connection, whatever is due each millisecond:
        a sleep per connection and message (a cancel scope and a deadline each) cost the
        generator more than the sends did. Latency counts from the actual send."""
        interval = conns / rate
        slots = sorted(range(conns), key=lambda i: i % 1000)
        offsets = [(i % 1000) / 1000 * interval for i in slots]
        first = trio.current_time() + 1  # let the group creations land
        for k in itertools.count():
            round_, j = divmod(k, conns)
            due = first + round_ * interval + offsets[j]
            if due > trio.current_time():
                await trio.sleep_until(due + 0.001)
            elif k % 64 == 0:
                await trio.lowlevel.checkpoint()  # behind: the readers still get their turn
            if stop.is_set():
                return
            send = senders[slots[j]]
            assert send is not None
            await send()

    async with trio.open_nursery() as nursery:
        for i in range(conns):
            nursery.start_soon(connection, i)
            if i % 50 == 49:
                await trio.sleep(0.01)
        await ready.wait()
        if rate:
            nursery.start_soon(pace)
        # The generator's own collections would stall its reads and count against the
        # server: what exists now lives to the end, and a short run can leave its cycles.
        gc.freeze()
        gc.disable()
        await trio.sleep(1 + warmup)
        start[0] = time.perf_counter()
        await trio.sleep(seconds)
        elapsed = time.perf_counter() - start[0]
        stop.set()
        nursery.cancel_scope.cancel()
    return {
        "acked_per_s": counted[0] / elapsed,
        "ack_p50_ms": percentile(latencies, 50) * 1000,
        "ack_p99_ms": percentile(latencies, 99) * 1000,
    }


def run_generator(port: int, conns: int, seconds: float, rate: float) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "_generate",
        str(port),
        str(conns),
        str(seconds),
        str(rate),
    ]
    out = subprocess.run(pinned("1", command), capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def one_run(policy: str, conns: int, seconds: float, rate: float, mode: str) -> dict[str, Any]:
    """A fresh server with `policy`, one generator run against it."""
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(
            Path(tmp), "0", "--fsync", policy, "--send-rate", "1000000", "--send-burst", "1000000"
        )
        cpu0 = server.cpu_seconds()
        steal0 = [steal_seconds(0), steal_seconds(1)]
        started = time.perf_counter()
        result = run_generator(server.port, conns, seconds, rate)
        elapsed = time.perf_counter() - started
        steal = [(steal_seconds(i) - steal0[i]) / elapsed for i in (0, 1)]
        cpu = server.cpu_seconds() - cpu0
        server.stop()
    return {
        "fsync": policy,
        "mode": mode,
        **result,
        "server_cpu_s": cpu,
        "gen_cpu_s": result.pop("gen_cpu_s"),
        "steal_server_pct": steal[0] * 100,
        "steal_gen_pct": steal[1] * 100,
    }


def throughput(args: argparse.Namespace) -> None:
    """Closed-loop peaks of `never` and `always`, in rounds ordered never, always, always,
    never, ... so that a drift in the machine's speed weighs on both alike; then paced runs
    at half the durable peak."""
    rows = []
    peaks: dict[str, list[float]] = {"never": [], "always": []}
    for i in range(args.rounds):
        order = ("never", "always") if i % 2 == 0 else ("always", "never")
        for policy in order:
            row = one_run(policy, args.conns, args.seconds, 0, f"closed loop, round {i + 1}")
            peaks[policy].append(row["acked_per_s"])
            rows.append(row)
    peak = {policy: sum(v) / len(v) for policy, v in peaks.items()}
    target = peak["always"] / 2
    mode = f"paced {target:,.0f}/s"
    conns, seconds = args.conns, args.seconds
    rows += [one_run("always", conns, seconds, target, mode) for _ in range(args.paced_runs)]
    print_table(rows)
    print(
        f"durable/baseline sends/s: {peak['always'] / peak['never']:.1%} "
        f"(means of {args.rounds} rounds: {peak['always']:,.0f} and {peak['never']:,.0f})"
    )


# --- restart and snapshot stall ----------------------------------------------------------------


def build_state(events: int, convs: int) -> tuple[Chat, int]:
    """A Chat holding `events` message events over `convs` DMs, built without the server."""
    chat = Chat(Limits())
    body_bytes = 0
    per_conv = events // convs
    lsn = 0
    for c in range(convs):
        conv = f"dm:u{2 * c}:u{2 * c + 1}"
        for s in range(1, per_conv + 1):
            ts = chat.clock.tick()
            event, size = message_event(conv, s, ts, f"u{2 * c + s % 2}")
            body_bytes += size
            chat.apply(event)
            lsn += 1
    return chat, body_bytes


def write_snapshot(chat: Chat, data_dir: Path, lsn: int) -> Path:
    """The data directory a server would leave: the events in the store, the live state in
    a snapshot."""
    directory = snapshot_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    store = HistoryStore(store_path(data_dir))
    store.write_events((e for conv in chat.conversation_ids() for e in chat.events(conv)), lsn)
    store.sync()
    store.close()
    encoder = SnapshotEncoder(lsn, chat.clock.value)
    path = snapshot_path(directory, lsn)
    with path.open("wb") as f:
        f.write(encoder.begin())
        for conv in chat.conversation_ids():
            f.write(encoder.conversation(chat.capture(conv)))
        f.write(encoder.filter(chat.capture_filter()))
        f.write(encoder.end())
    return path


def restart(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    chat, body_bytes = build_state(args.events, args.convs)
    built = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        write_snapshot(chat, data, args.events)
        del chat
        started = time.perf_counter()
        server = Server(data, "0")
        ready = time.perf_counter() - started
        rss = server.rss_bytes()
        server.stop()
        disk = sum(p.stat().st_size for p in data.rglob("*") if p.is_file() and p.name != "LOCK")
    budget = 2 * body_bytes + 64 * args.events
    print_table(
        [
            {
                "events": args.events,
                "convs": args.convs,
                "restart_s": ready,
                "disk_mb": disk / 1e6,
                "bodies_mb": body_bytes / 1e6,
                "budget_mb": budget / 1e6,
                "disk/budget": disk / budget,
                "rss_mb": rss / 1e6,
            }
        ]
    )
    print(f"(state built in {built:.1f} s, not counted)")


async def _stall(args: argparse.Namespace) -> dict[str, Any]:
    from imcore.server.collector import Collector
    from imcore.server.files import Files
    from imcore.server.snapshots import Snapshotter
    from imcore.server.wal import Wal

    chat, _ = build_state(args.events, args.convs)
    Collector().install()  # as the server does once it has recovered
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        wal = Wal(wal_dir(data), Files(), next_lsn=args.events + 1, segment=None, fsync="always")
        wal.durable_lsn = args.events

        async def stored() -> int:
            return int(args.events)

        snapshotter = Snapshotter(
            chat,
            wal,
            snapshot_dir(data),
            Files(),
            every_records=10**9,
            interval_s=10**9,
            store_sync=stored,
        )
        gaps: list[float] = []
        done = trio.Event()

        async def watch_loop() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await trio.lowlevel.checkpoint()
                t = time.perf_counter()
                gaps.append(t - last)
                last = t

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_loop)
            t0 = time.perf_counter()
            path = await snapshotter.take()
            took = time.perf_counter() - t0
            done.set()
        assert path is not None
        size = path.stat().st_size
        wal.close()
    return {
        "events": args.events,
        "snapshot_s": took,
        "snapshot_mb": size / 1e6,
        "max_loop_gap_ms": max(gaps) * 1000,
        "p99_loop_gap_ms": percentile(gaps, 99) * 1000,
    }


def snapshot_stall(args: argparse.Namespace) -> None:
    print_table([trio.run(_stall, args)])


def main() -> None:
    if sys.argv[1:2] == ["_generate"]:
        port, conns, seconds, rate = sys.argv[2:6]
        result = trio.run(generate, int(port), int(conns), float(seconds), float(rate), 1.0)
        import os

        result["gen_cpu_s"] = process_cpu(os.getpid())
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("throughput")
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rounds", type=int, default=3, help="closed-loop runs of each policy")
    p.add_argument("--paced-runs", type=int, default=1)
    p.set_defaults(run=throughput)
    for name, run in (("restart", restart), ("snapshot-stall", snapshot_stall)):
        p = commands.add_parser(name)
        p.add_argument("--events", type=int, default=1_000_000)
        p.add_argument("--convs", type=int, default=10_000)
        p.set_defaults(run=run)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
