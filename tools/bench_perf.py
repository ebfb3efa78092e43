"""Hot-path benchmarks: imcore against the floor (tools/floor.py) in one invocation.

    python tools/bench_perf.py fanout [--members 1000] [--messages 2000] [--senders 1]
    python tools/bench_perf.py dm [--pairs 500] [--seconds 10] [--window 1]
    python tools/bench_perf.py conns [--conns 19000] [--hold 60]
    python tools/bench_perf.py mixed [--members 10000] [--flood-rate 5] [--pairs 200]

Each server (imcore with `--fsync always`, then the floor) runs pinned to CPU 0; the load
generators run in separate processes pinned to CPU 1. Every row gives the server's CPU
seconds per delivery, deliveries/s, ack and end-to-end latency (the send time travels in
the body), the server's RSS and the generator's CPU, and says when the generator was the
limit. The last column is imcore's figure as a ratio to the floor's. `--only imcore` or
`--only floor` runs one side. `--baseline DIR --rounds N` instead runs this imcore and the
imcore of another checkout (DIR, with its own `.venv`) in turns, N rounds each, with the same
generator, and prints their ratio: a before/after comparison in one run. Figures go in
docs/benchmarks.md; never run as a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import cbor2
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imcore import wsframes
from imcore.core import auth
from imcore.wsclient import RawWebSocket
from imcore.wsframes import OP_PONG
from tools.benchlib import SECRET, Server, percentile, pinned, print_table, process_cpu, rss_of

HOST = "127.0.0.1"
ACK_KEY = cbor2.dumps("op") + cbor2.dumps("ack")  # after a one-byte map header: an ack
OK_KEY = cbor2.dumps("op") + cbor2.dumps("ok")  # ... or the reply to group.create
STAMP = b"~T~"  # the body starts with ~T~<time.time()>: a message, and when it was sent
BODY_SIZE = 100
CONNECT_AT_ONCE = 200  # handshakes in flight at a time
#: Above this share of one core, the generator is taken to be the limit.
GENERATOR_BOUND = 0.9
SERVER_ARGS = ["--fsync", "always", "--send-rate", "1000000", "--send-burst", "1000000"]


def body() -> str:
    stamp = f"~T~{time.time():.6f}"
    return stamp + "x" * (BODY_SIZE - len(stamp))


def stamp_of(data: bytes) -> float | None:
    i = data.find(STAMP)
    return float(data[i + 3 : i + 20]) if i >= 0 else None


# --- the generator side (runs in its own process) -----------------------------------------


class Client:
    """One generator connection: counts acks and messages, with their latencies."""

    def __init__(self, ws: RawWebSocket, stats: Stats, sample: bool) -> None:
        self.ws = ws
        self.stats = stats
        self.sample = sample  # e2e latency of messages is recorded for a sample of clients
        self.sent_at: deque[float] = deque()  # acks come back in the order of sends
        self.window: trio.Semaphore | None = None
        self.received = 0
        self.last_at = 0.0
        self.got = trio.Event()
        self.expect = -1
        self.all_acked: trio.Event | None = None  # set once no send is waiting for its reply

    async def send(self, conv: str, n: int) -> None:
        if self.window is not None:
            await self.window.acquire()
        frame = {"op": "send", "id": n, "conv": conv, "cmid": str(n), "body": body()}
        self.sent_at.append(time.perf_counter())
        await self.ws.send(cbor2.dumps(frame))

    async def read(self) -> None:
        stats = self.stats
        try:
            while True:
                for data in await self.ws.receive():
                    if data[1:8] == ACK_KEY or data[1:7] == OK_KEY:
                        t = time.perf_counter()
                        sent = self.sent_at.popleft() if self.sent_at else t
                        if not self.sent_at and self.all_acked is not None:
                            self.all_acked.set()
                        if stats.counting:
                            stats.acks.append(t - sent)
                        if self.window is not None:
                            self.window.release()
                    elif STAMP in data:
                        self.received += 1
                        self.last_at = time.perf_counter()
                        if stats.counting:
                            stats.deliveries += 1
                            if self.sample:
                                stamp = stamp_of(data)
                                if stamp is not None:
                                    stats.e2e.append(time.time() - stamp)
                        if self.received == self.expect:
                            self.got.set()
        except (ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError):
            stats.dropped += 1


class Stats:
    def __init__(self) -> None:
        self.counting = False
        self.acks: list[float] = []
        self.e2e: list[float] = []
        self.deliveries = 0
        self.dropped = 0
        self.last_at = 0.0  # when the last delivery was read

    def latencies(self) -> dict[str, float]:
        return {
            "ack_p50_ms": percentile(self.acks, 50) * 1000,
            "ack_p99_ms": percentile(self.acks, 99) * 1000,
            "e2e_p50_ms": percentile(self.e2e, 50) * 1000,
            "e2e_p99_ms": percentile(self.e2e, 99) * 1000,
        }


async def connect(spec: dict[str, Any], user: str, room: str) -> RawWebSocket:
    port = spec["port"]
    if spec["target"] == "floor":
        return await RawWebSocket.connect(HOST, port, f"/ws?room={room}", "imcore.v1.cbor")
    ws = await RawWebSocket.connect(HOST, port, "/ws", "imcore.v1.cbor")
    token = auth.mint(user, SECRET, now_ms=int(time.time() * 1000))
    hello = {"op": "hello", "id": 0, "v": 1, "token": token, "device": "d", "recv": False}
    await ws.send(cbor2.dumps(hello))
    for data in await ws.receive():
        if b"welcome" not in data:
            raise ConnectionError(f"no welcome: {cbor2.loads(data)}")
    return ws


async def connect_all(
    spec: dict[str, Any], names: list[tuple[str, str]], stats: Stats, nursery: trio.Nursery
) -> list[Client]:
    """Connect every (user, room) with a reader task each; a few hundred at a time."""
    clients: list[Client | None] = [None] * len(names)
    limit = trio.Semaphore(CONNECT_AT_ONCE)

    async def one(i: int, user: str, room: str) -> None:
        async with limit:
            ws = await connect(spec, user, room)
        client = clients[i] = Client(ws, stats, sample=i % spec.get("sample_every", 1) == 0)
        nursery.start_soon(client.read)

    async with trio.open_nursery() as connecting:
        for i, (user, room) in enumerate(names):
            connecting.start_soon(one, i, user, room)
    return [c for c in clients if c is not None]


async def create_group(spec: dict[str, Any], owner: Client, conv: str, members: list[str]) -> None:
    """The owner creates the group with everyone in it (imcore only; the floor has rooms)."""
    if spec["target"] == "floor":
        return
    frame = {"op": "group.create", "id": 0, "conv": conv, "members": members}
    owner.all_acked = trio.Event()
    owner.sent_at.append(time.perf_counter())
    await owner.ws.send(cbor2.dumps(frame))
    await owner.all_acked.wait()


def socket_fd(ws: RawWebSocket) -> int:
    """The file descriptor under a TCP client (what RawWebSocket.connect opens)."""
    stream = ws.stream
    assert isinstance(stream, trio.SocketStream)
    return stream.socket.fileno()


def ready() -> float:
    """Tell the orchestrator the measured phase starts; our CPU so far."""
    print("ready", flush=True)
    return process_cpu(os.getpid())


def finish(stats: Stats, cpu0: float, elapsed: float, **fields: Any) -> dict[str, Any]:
    """The measured phase is over (said before the connections are torn down)."""
    print("done", flush=True)
    cpu = process_cpu(os.getpid()) - cpu0
    return {
        **fields,
        "seconds": elapsed,
        "deliveries": stats.deliveries,
        "deliveries_per_s": stats.deliveries / elapsed,
        **stats.latencies(),
        "dropped": stats.dropped,
        "gen_cpu_s": cpu,
        "gen_bound": cpu / elapsed > GENERATOR_BOUND,
    }


async def gen_fanout(spec: dict[str, Any]) -> dict[str, Any]:
    """Senders read their acks and messages as clients; every other member is drained
    (see `drain`), so that reading 1,000 sockets is not the generator's limit."""
    n, messages, senders = spec["members"], spec["messages"], spec["senders"]
    conv = "g:fanout"
    stats = Stats()
    drained = Stats()
    async with trio.open_nursery() as nursery:
        names = [(f"m{i}", "fanout") for i in range(n)]
        async with trio.open_nursery() as readers:
            clients = await connect_all(spec, names, stats, readers)
            await create_group(spec, clients[0], conv, [u for u, _ in names[1:]])
            readers.cancel_scope.cancel()
        per_sender = messages // senders
        for client in clients[:senders]:
            client.expect = per_sender * senders  # the sending connection gets its own too
            client.window = trio.Semaphore(spec["window"])
            nursery.start_soon(client.read)
        members = clients[senders:]
        fds = [(socket_fd(c.ws), c.sample) for c in members]
        cpu0 = ready()
        stats.counting = drained.counting = True
        start = time.perf_counter()

        async def send_all(client: Client) -> None:
            for k in range(per_sender):
                await client.send(conv, k + 1)

        for client in clients[:senders]:
            nursery.start_soon(send_all, client)
        stop = threading.Event()
        with trio.move_on_after(spec["timeout"]):
            until = len(members) * per_sender * senders
            await trio.to_thread.run_sync(drain, fds, drained, stop, until, abandon_on_cancel=True)
            for client in clients[:senders]:
                await client.got.wait()
        stop.set()
        end = max(drained.last_at, *(c.last_at for c in clients[:senders]))
        stats.deliveries += drained.deliveries
        stats.e2e += drained.e2e
        result = finish(stats, cpu0, end - start, sends=per_sender * senders)
        nursery.cancel_scope.cancel()
    return result


async def gen_dm(spec: dict[str, Any]) -> dict[str, Any]:
    """Pairs chatting: closed loop (`rate` 0, `window` unacked sends per client) or paced."""
    pairs, seconds, rate = spec["pairs"], spec["seconds"], spec["rate"]
    stats = Stats()
    first = spec.get("first_user", 0)
    async with trio.open_nursery() as nursery:
        names = [(f"p{first + i}", f"dm{i // 2}") for i in range(2 * pairs)]
        clients = await connect_all(spec, names, stats, nursery)
        for client in clients:
            client.window = trio.Semaphore(spec["window"]) if not rate else None
        stop = trio.Event()

        async def chat(i: int, client: Client) -> None:
            me, peer = f"p{first + i}", f"p{first + (i ^ 1)}"
            conv = "dm:{}:{}".format(*sorted((me, peer)))
            interval = 1 / rate if rate else 0.0
            next_at = trio.current_time() + (i % 100) / 100 * interval
            n = 0
            while not stop.is_set():
                if rate:
                    await trio.sleep_until(next_at)
                    next_at += interval
                n += 1
                await client.send(conv, n)

        for i, client in enumerate(clients):
            nursery.start_soon(chat, i, client)
        await trio.sleep(spec["warmup"])
        cpu0 = ready()
        stats.counting = True
        start = time.perf_counter()
        await trio.sleep(seconds)
        stats.counting = False
        elapsed = time.perf_counter() - start
        stop.set()
        result = finish(stats, cpu0, elapsed, acked_per_s=len(stats.acks) / elapsed)
        nursery.cancel_scope.cancel()
    return result


async def gen_flood(spec: dict[str, Any]) -> dict[str, Any]:
    """A big group, its first member sending `flood_rate` messages/s until SIGTERM.

    Its members only have to be drained, so once the group is made their sockets are read
    by `drain` (one thread, epoll, no frame parsing) instead of a trio task each: that
    keeps this generator from being the limit of the flood.
    """
    n = spec["members"]
    conv = "g:flood"
    stats = Stats()
    async with trio.open_nursery() as nursery:
        names = [(f"f{i}", "flood") for i in range(n)]
        async with trio.open_nursery() as readers:
            clients = await connect_all(spec, names, stats, readers)
            await create_group(spec, clients[0], conv, [u for u, _ in names[1:]])
            readers.cancel_scope.cancel()
        fds = [(socket_fd(c.ws), c.sample) for c in clients]
        stop = threading.Event()
        cpu0 = ready()
        stats.counting = True
        start = time.perf_counter()
        interval = 1 / spec["flood_rate"]
        with trio.open_signal_receiver(signal.SIGTERM) as signals:

            async def flood() -> None:
                next_at = trio.current_time()
                k = 0
                while True:
                    await trio.sleep_until(next_at)
                    next_at += interval
                    k += 1
                    await clients[0].send(conv, k)

            async def on_sigterm() -> None:
                async for _ in signals:
                    break
                stop.set()

            nursery.start_soon(flood)
            nursery.start_soon(on_sigterm)
            await trio.to_thread.run_sync(drain, fds, stats, stop)
        elapsed = time.perf_counter() - start
        result = finish(stats, cpu0, elapsed)
        nursery.cancel_scope.cancel()
    return result


def drain(
    fds: list[tuple[int, bool]], stats: Stats, stop: threading.Event, until: float = math.inf
) -> None:
    """Read every socket until `stop`, or until `until` messages are counted, counting
    stamped messages in the raw bytes; the e2e latency is taken from the sockets marked for
    sampling. Server pings (an empty ping frame, 89 00) are answered; a false match in a
    body only sends a spare pong."""
    pong = wsframes.frame(b"", OP_PONG, masked=True)
    sampled = {fd for fd, sample in fds if sample}
    tails: dict[int, bytes] = {}
    poller = select.epoll()
    for fd, _ in fds:
        poller.register(fd, select.EPOLLIN)
    try:
        while not stop.is_set() and stats.deliveries < until:
            for fd, _ in poller.poll(0.1):
                try:
                    data = os.read(fd, 1 << 18)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    stats.dropped += 1
                    continue
                if b"\x89\x00" in data:
                    os.write(fd, pong)
                chunk = tails.get(fd, b"") + data
                tails[fd] = chunk[-2:]  # a stamp split between two reads is counted once
                stats.deliveries += chunk.count(STAMP)
                stats.last_at = time.perf_counter()
                if fd in sampled:
                    now = time.time()
                    i = chunk.find(STAMP)
                    while 0 <= i <= len(chunk) - 20:
                        stats.e2e.append(now - float(chunk[i + 3 : i + 20]))
                        i = chunk.find(STAMP, i + 3)
    finally:
        poller.close()


async def gen_conns(spec: dict[str, Any]) -> dict[str, Any]:
    """Idle connections (answering pings), held for `hold` seconds."""
    stats = Stats()
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        names = [(f"c{i}", f"r{i}") for i in range(spec["conns"])]
        clients = await connect_all(spec, names, stats, nursery)
        connect_s = time.perf_counter() - start
        cpu0 = ready()
        await trio.sleep(spec["hold"])
        result = finish(
            stats,
            cpu0,
            spec["hold"],
            conns=len(clients),
            connect_s=connect_s,
            accepts_per_s=len(clients) / connect_s,
            pings_answered=sum(c.ws.pings for c in clients),
        )
        nursery.cancel_scope.cancel()
    return result


GENERATORS = {"fanout": gen_fanout, "dm": gen_dm, "flood": gen_flood, "conns": gen_conns}


def generator_main(spec: dict[str, Any]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # A run is short, and the generator's own collections would stall its reads and count
    # against the server's latency: reference counting frees what it makes.
    gc.disable()
    result = trio.run(GENERATORS[spec["mode"]], spec)
    print(json.dumps(result), flush=True)


# --- the orchestrator ---------------------------------------------------------------------


class Floor:
    """tools/floor.py as a subprocess pinned like the server."""

    def __init__(self, cpus: str) -> None:
        command = [sys.executable, str(Path(__file__).with_name("floor.py"))]
        self.process = subprocess.Popen(
            pinned(cpus, command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r":(\d+)/ws", line)
        if not match:
            raise RuntimeError(f"floor did not start: {line!r}")
        self.port = int(match.group(1))

    def cpu_seconds(self) -> float:
        return process_cpu(self.process.pid)

    def rss_bytes(self) -> int:
        return rss_of(self.process.pid)

    def stop(self) -> int:
        self.process.kill()
        return self.process.wait(timeout=30)


class Generator:
    """A generator process; `wait_ready` returns once its measured phase starts."""

    def __init__(self, spec: dict[str, Any]) -> None:
        command = [sys.executable, __file__, "_gen", json.dumps(spec)]
        self.process = subprocess.Popen(pinned("1", command), stdout=subprocess.PIPE, text=True)

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.process.wait()
            raise RuntimeError(f"generator failed before starting: {line!r}")

    def wait_done(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "done":
            self.process.wait()
            raise RuntimeError(f"generator failed: {line!r}")

    def result(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        if self.process.wait() != 0:
            raise RuntimeError("generator failed")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result


#: The checkout whose imcore runs as the "baseline" target (`--baseline`).
BASELINE: list[Path] = []


def start_server(target: str, tmp: str) -> Server | Floor:
    if target == "floor":
        return Floor("0")
    if target == "baseline":
        return Server(Path(tmp), "0", *SERVER_ARGS, bin_dir=BASELINE[0] / ".venv" / "bin")
    return Server(Path(tmp), "0", *SERVER_ARGS)


def measure(target: str, specs: list[dict[str, Any]], stop_first: bool = False) -> dict[str, Any]:
    """Run generators (the first one measured) against a fresh server of `target`."""
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(target, tmp)
        gens: list[Generator] = []
        try:
            rss0 = server.rss_bytes()
            for spec in specs:
                gen = Generator({**spec, "target": target, "port": server.port})
                gens.append(gen)
                gen.wait_ready()
            cpu0 = server.cpu_seconds()
            rss_loaded = server.rss_bytes()
            if stop_first:  # the background load (first) runs until the measured one ends
                gens[1].wait_done()
                gens[0].process.send_signal(signal.SIGTERM)
                gens[0].wait_done()
            else:
                gens[0].wait_done()
            cpu = server.cpu_seconds() - cpu0
            rss = server.rss_bytes()
            measured = gens[-1].result()
            background = gens[0].result() if stop_first else None
        finally:
            for gen in gens:
                if gen.process.poll() is None:
                    gen.process.kill()
            server.stop()
    row = {"server": target, **measured, "server_cpu_s": cpu, "rss_mb": rss / 1e6}
    row["rss0_mb"], row["rss_loaded_mb"] = rss0 / 1e6, rss_loaded / 1e6
    if background is not None:
        row["background"] = background
    deliveries = row.get("deliveries") or 0
    if deliveries:
        row["server_us_per_delivery"] = cpu / deliveries * 1e6
    row["server_cpu_share"] = cpu / row["seconds"]
    return row


def _median_ratio(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """This imcore's median figure over the baseline's, for each numeric key."""
    ratio: dict[str, Any] = dict.fromkeys(keys, "")
    ratio["server"] = "imcore/baseline (medians)"
    for k in keys:
        mine = [r[k] for r in rows if r["server"] == "imcore" and _numeric(r.get(k))]
        theirs = [r[k] for r in rows if r["server"] == "baseline" and _numeric(r.get(k))]
        if mine and theirs and statistics.median(theirs):
            ratio[k] = statistics.median(mine) / statistics.median(theirs)
    return ratio


def _numeric(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare(rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Print the rows' `keys`, and imcore's figures as a ratio to the floor's."""
    table = [{k: r.get(k, "") for k in ["server", *keys]} for r in rows]
    if any(r["server"] == "baseline" for r in rows):
        table += [_median_ratio(rows, keys)]
    by = {r["server"]: r for r in rows}
    if "imcore" in by and "floor" in by:
        ratio: dict[str, Any] = {"server": "imcore/floor"}
        for k in keys:
            a, b = by["imcore"].get(k), by["floor"].get(k)
            numeric = isinstance(a, (int, float)) and isinstance(b, (int, float))
            ratio[k] = a / b if numeric and b and not isinstance(a, bool) else ""
        table.append(ratio)
    print_table(table)
    print(json.dumps(rows))


def targets(args: argparse.Namespace) -> list[str]:
    if args.baseline:  # in turns (ABBA...), so drift and noise fall on both alike
        pairs = [["baseline", "imcore"], ["imcore", "baseline"]]
        return [t for i in range(args.rounds) for t in pairs[i % 2]]
    return [args.only] if args.only else ["imcore", "floor"]


def fanout(args: argparse.Namespace) -> None:
    spec = {
        "mode": "fanout",
        "members": args.members,
        "messages": args.messages,
        "senders": args.senders,
        "window": args.window,
        "timeout": 120,
        "sample_every": 10,
    }
    rows = [measure(t, [spec]) for t in targets(args)]
    keys = ["deliveries", "seconds", "deliveries_per_s", "server_us_per_delivery"]
    keys += ["server_cpu_s", "server_cpu_share", "ack_p50_ms", "ack_p99_ms", "e2e_p50_ms"]
    keys += ["e2e_p99_ms", "rss_mb", "gen_cpu_s", "gen_bound"]
    compare(rows, keys)


def dm(args: argparse.Namespace) -> None:
    spec = {
        "mode": "dm",
        "pairs": args.pairs,
        "seconds": args.seconds,
        "rate": args.rate,
        "window": args.window,
        "warmup": 2.0,
    }
    rows = [measure(t, [spec]) for t in targets(args)]
    keys = ["acked_per_s", "deliveries_per_s", "server_us_per_delivery", "server_cpu_share"]
    keys += ["ack_p50_ms", "ack_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "rss_mb"]
    keys += ["gen_cpu_s", "gen_bound"]
    compare(rows, keys)


def mixed(args: argparse.Namespace) -> None:
    flood = {
        "mode": "flood",
        "members": args.members,
        "flood_rate": args.flood_rate,
        "sample_every": 50,
    }
    chat = {
        "mode": "dm",
        "pairs": args.pairs,
        "seconds": args.seconds,
        "rate": args.rate,
        "window": 1,
        "warmup": 2.0,
        "first_user": 0,
    }
    rows = []
    for target in targets(args):
        row = measure(target, [flood, chat], stop_first=True)
        background = row.pop("background")
        row["flood_deliveries_per_s"] = background["deliveries_per_s"]
        row["flood_e2e_p99_ms"] = background["e2e_p99_ms"]
        row["flood_dropped"] = background["dropped"]
        row["flood_gen_cpu_s"] = background["gen_cpu_s"]
        # Both generators share one core: together they may be its limit.
        share = background["gen_cpu_s"] / background["seconds"] + row["gen_cpu_s"] / row["seconds"]
        row["gen_core_share"] = share
        row["gen_bound"] = share > GENERATOR_BOUND
        # The flood ran longer than the measured window: count its deliveries at its rate.
        flooded = background["deliveries_per_s"] * row["seconds"]
        row["server_us_per_delivery"] = row["server_cpu_s"] / (flooded + row["deliveries"]) * 1e6
        rows.append(row)
    keys = ["acked_per_s", "ack_p50_ms", "ack_p99_ms", "e2e_p50_ms", "e2e_p99_ms"]
    keys += ["flood_deliveries_per_s", "flood_e2e_p99_ms", "flood_dropped"]
    keys += ["server_us_per_delivery", "server_cpu_share", "rss_mb", "gen_cpu_s"]
    keys += ["flood_gen_cpu_s", "gen_core_share", "gen_bound"]
    compare(rows, keys)


def conns(args: argparse.Namespace) -> None:
    spec = {"mode": "conns", "conns": args.conns, "hold": args.hold}
    rows = []
    for target in targets(args):
        row = measure(target, [spec])
        row["rss_kib_per_conn"] = (row["rss_loaded_mb"] - row["rss0_mb"]) * 1e6 / 1024 / args.conns
        rows.append(row)
    keys = ["conns", "connect_s", "accepts_per_s", "dropped", "pings_answered"]
    keys += ["rss0_mb", "rss_loaded_mb", "rss_kib_per_conn", "server_cpu_s", "gen_cpu_s"]
    compare(rows, keys)


def main() -> None:
    if sys.argv[1:2] == ["_gen"]:
        generator_main(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["imcore", "floor"])
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="turns each, with --baseline")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("fanout")
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--senders", type=int, default=1)
    p.add_argument("--window", type=int, default=16, help="unacked sends per sender")
    p.set_defaults(run=fanout)
    p = commands.add_parser("dm")
    p.add_argument("--pairs", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rate", type=float, default=0, help="sends/s per client; 0: closed loop")
    p.add_argument("--window", type=int, default=1, help="unacked sends per client")
    p.set_defaults(run=dm)
    p = commands.add_parser("mixed")
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--flood-rate", type=float, default=5, help="group messages/s")
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--rate", type=float, default=2, help="DM sends/s per client")
    p.add_argument("--seconds", type=float, default=10)
    p.set_defaults(run=mixed)
    p = commands.add_parser("conns")
    p.add_argument("--conns", type=int, default=19_000)
    p.add_argument("--hold", type=float, default=60)
    p.set_defaults(run=conns)
    args = parser.parse_args()
    if args.baseline:
        if not (args.baseline / ".venv" / "bin" / "imcore").exists():
            parser.error(f"{args.baseline} has no .venv/bin/imcore (run make venv there)")
        BASELINE.append(args.baseline.resolve())
    args.run(args)


if __name__ == "__main__":
    main()
