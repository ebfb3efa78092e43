"""History-store benchmarks: the targets of issue 16 (figures for docs/benchmarks.md; never
run as a test). Data directories come from tools/build_history.py.

    python tools/bench_history.py restart --small DIR_1M --large DIR_10M [--runs 3]
        Restart time, RSS and bytes on disk of a server on each directory (same
        conversations, 1M and 10M stored events), in alternating order, with the page
        cache warm and dropped; RSS bytes per extra stored event; the 10M/1M time ratio.
    python tools/bench_history.py cold --data DIR_10M [--rate 2000] [--sync-rate 50]
                                       [--rounds 2] [--seconds 10]
        A paced DM load on existing conversations, in phases without and with `sync`
        pages of 100 events at random old positions of other conversations (ABBA),
        between two phases of the same syncs alone (no load: their floor), the store's
        files dropped from the page cache before every phase: sync latency, and the
        load's ack latency with the syncs against without them.
    python tools/bench_history.py lookups --data DIR_10M [--probes 200000] [--lookups 400]
        How often the snapshot's cmid filter cannot rule out a new cmid (each such send
        waits for a store lookup), and the cost of that lookup, cold, in a direct
        conversation and in the big group, as `HistoryStore.find_cmid` makes it and
        through the dedup index by name.
    python tools/bench_history.py writes --baseline CHECKOUT [--large DIR_10M] [--rounds 3]
                                         [--paced-runs 2]
        Closed-loop durable sends/s (tools/bench_durability.py's workload and generator)
        of this tree against another checkout's imcore (its own .venv), in turns, then
        paced runs of both at half the baseline's mean peak. With `--large`, this tree also
        runs on a fresh copy of that directory each turn.

The server runs pinned to CPU 0 and every generator to CPU 1 (taskset). Each row gives
the server's and the generator's CPU and the steal of both CPUs (the share of their time
the hypervisor gave to another machine), and says when the generator was the limit.
Directories that a run writes to are copied first (`--scratch`), so a built one stays as
built.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imcore.core import auth
from imcore.core.dedup import CmidFilter
from imcore.core.snapshot import decode
from imcore.server.layout import list_snapshots, snapshot_dir
from imcore.server.store import HistoryStore, store_files, store_path
from imcore.wsclient import RawWebSocket
from tools.bench_durability import run_generator
from tools.benchlib import (
    BIN,
    SECRET,
    Server,
    percentile,
    pinned,
    print_table,
    process_cpu,
    steal_seconds,
)
from tools.build_history import GROUP, Client, allocated, conv_names, report_path

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Above this share of one core, the generator is taken to be the limit.
GENERATOR_BOUND = 0.9
SERVER_ARGS = ["--fsync", "always", "--send-rate", "1000000", "--send-burst", "1000000"]
PAGE = 100  # events per cold `sync` (the protocol's default page)
ACK_KEY = cbor2.dumps("op") + cbor2.dumps("ack")  # after a one-byte map header: an ack
BATCH_KEY = cbor2.dumps("op") + cbor2.dumps("batch")


def build_report(data_dir: Path) -> dict[str, Any]:
    path = report_path(data_dir)
    if not path.exists():
        raise SystemExit(f"{path} is missing: make {data_dir} with tools/build_history.py build")
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def copy_data(source: Path, scratch: Path) -> Path:
    """A copy of a data directory under `scratch` (made if missing), replacing an older one."""
    target = scratch / f"{source.name}-copy"
    if target.exists():
        shutil.rmtree(target)
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(target)], check=True)
    return target


def drop_cache(paths: Sequence[Path]) -> None:
    """Flush these files and ask the kernel to drop their pages from its cache (a no-op where
    unsupported): what a read then finds is on the disk, not in memory."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def data_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_file() and p.name != "LOCK"]


class Disk:
    """The block device under a path, and what it did over an interval (its /sys stat):
    reads and writes per second, and their mean time from queue to completion."""

    def __init__(self, path: Path) -> None:
        dev = path.stat().st_dev
        self.stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
        self.t0 = time.perf_counter()
        self.f0 = self._fields()

    def _fields(self) -> list[int]:
        try:
            return [int(f) for f in self.stat.read_text().split()]
        except OSError:
            return [0] * 11

    def figures(self) -> dict[str, float]:
        f, elapsed = self._fields(), time.perf_counter() - self.t0
        d = [b - a for a, b in zip(self.f0, f, strict=False)]
        return {
            "disk_reads_per_s": d[0] / elapsed,
            "disk_read_ms": d[3] / d[0] if d[0] else 0.0,
            "disk_writes_per_s": d[4] / elapsed,
            "disk_write_ms": d[7] / d[4] if d[4] else 0.0,
            "disk_written_mb_per_s": d[6] * 512 / elapsed / 1e6,
        }


def written_bytes(pid: int) -> int:
    """Bytes the process has caused to be written to storage so far (/proc/PID/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def peak_rss(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Steal:
    """Steal of CPU 0 (server) and CPU 1 (generator) over an interval, as % of it."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.s0 = (steal_seconds(0), steal_seconds(1))

    def pct(self) -> tuple[float, float]:
        elapsed = time.perf_counter() - self.t0
        s = (steal_seconds(0), steal_seconds(1))
        return (100 * (s[0] - self.s0[0]) / elapsed, 100 * (s[1] - self.s0[1]) / elapsed)


# --- restart, memory, disk ---------------------------------------------------------------------


async def first_welcome(port: int, user: str) -> None:
    client = await Client.open(port, user)
    await client.ws.aclose()


def restart_once(data_dir: Path, cold: bool, settle_s: float) -> dict[str, Any]:
    if cold:
        drop_cache(data_files(data_dir))
    steal = Steal()
    started = time.perf_counter()
    server = Server(data_dir, "0")
    listening = time.perf_counter() - started
    trio.run(first_welcome, server.port, "u2")
    welcome = time.perf_counter() - started
    cpu = server.cpu_seconds()
    rss = server.rss_bytes()
    time.sleep(settle_s)
    settled = server.rss_bytes()
    hwm = peak_rss(server.process.pid)
    steal0, _ = steal.pct()
    server.stop()
    return {
        "listening_s": listening,
        "first_welcome_s": welcome,
        "server_cpu_s": cpu,
        "rss_mb": rss / 1e6,
        "rss_settled_mb": settled / 1e6,
        "peak_rss_mb": hwm / 1e6,
        "steal_server_pct": steal0,
    }


def restart(args: argparse.Namespace) -> None:
    dirs = {"small": args.small, "large": args.large}
    reports = {name: build_report(d) for name, d in dirs.items()}
    if reports["small"]["convs"] != reports["large"]["convs"]:
        raise SystemExit("the two directories must hold the same conversations")
    rows: list[dict[str, Any]] = []
    for i in range(args.runs):
        for cache in ("warm", "cold"):
            order = ("small", "large") if i % 2 == 0 else ("large", "small")
            for name in order:
                if cache == "warm":  # read once, so "warm" is warm for both
                    for p in data_files(dirs[name]):
                        with p.open("rb") as f:
                            while f.read(1 << 20):
                                pass
                row = {"events": reports[name]["events"], "cache": cache, "run": i + 1}
                row |= restart_once(dirs[name], cache == "cold", args.settle)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print_table(rows)
    summary: list[dict[str, Any]] = []
    for cache in ("warm", "cold"):
        med: dict[str, dict[str, float]] = {}
        for name in ("small", "large"):
            mine = [
                r for r in rows if r["cache"] == cache and r["events"] == reports[name]["events"]
            ]
            med[name] = {
                k: statistics.median(r[k] for r in mine)
                for k in (
                    "listening_s",
                    "first_welcome_s",
                    "rss_mb",
                    "rss_settled_mb",
                    "peak_rss_mb",
                )
            }
        extra = reports["large"]["events"] - reports["small"]["events"]
        summary.append(
            {
                "cache": cache,
                "welcome_small_s": med["small"]["first_welcome_s"],
                "welcome_large_s": med["large"]["first_welcome_s"],
                "ratio": med["large"]["first_welcome_s"] / med["small"]["first_welcome_s"],
                "rss_b_per_extra_event": (med["large"]["rss_mb"] - med["small"]["rss_mb"])
                * 1e6
                / extra,
                "settled_b_per_extra_event": (
                    med["large"]["rss_settled_mb"] - med["small"]["rss_settled_mb"]
                )
                * 1e6
                / extra,
                "peak_b_per_extra_event": (
                    med["large"]["peak_rss_mb"] - med["small"]["peak_rss_mb"]
                )
                * 1e6
                / extra,
            }
        )
    print("medians (time to the first welcome; RSS once listening, after settling, peak)")
    print_table(summary)
    disk: list[dict[str, Any]] = []
    for name, d in dirs.items():
        report = reports[name]
        events = report["events"]
        store = allocated(store_files(d))
        snaps = allocated([p for _, p in list_snapshots(snapshot_dir(d))])
        total = allocated(data_files(d))
        budget = 2 * report["body_bytes_per_event"] + 100
        disk.append(
            {
                "events": events,
                "store_b_per_event": store / events,
                "snapshot_b_per_event": snaps / events,
                "all_b_per_event": total / events,
                "budget_b_per_event": budget,
                "all/budget": total / events / budget,
                "store_mb": store / 1e6,
                "snapshot_mb": snaps / 1e6,
            }
        )
    print("disk (allocated blocks; budget 2 x body bytes + 100 B/event)")
    print_table(disk)


# --- cold reads under a paced load -------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    name: str
    start: float = 0.0
    end: float = 0.0
    acks: list[float] = field(default_factory=list)
    syncs: list[float] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


def phase_of(phases: list[Phase], t: float) -> Phase | None:
    for p in phases:
        if p.start <= t < p.end:
            return p
    return None


async def cold_generate(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The load and the readers (runs in its own process, pinned to CPU 1)."""
    port, server_pid = spec["port"], spec["server_pid"]
    pairs, rate = spec["pairs"], spec["rate"]
    names = conv_names(spec["convs"])
    now_ms = int(time.time() * 1000)
    rng = random.Random(16)
    phases = [Phase(name) for name in spec["phases"]]
    loaders: list[tuple[RawWebSocket, str, dict[int, float]]] = []
    readers: list[tuple[RawWebSocket, str, int, dict[int, float]]] = []
    idle: list[int] = []

    async def hello(user: str) -> tuple[RawWebSocket, dict[str, Any]]:
        ws = await RawWebSocket.connect("127.0.0.1", port, "/ws", "imcore.v1.cbor")
        token = auth.mint(user, SECRET, now_ms=now_ms)
        frame = {"op": "hello", "id": 0, "v": 1, "token": token, "device": "d", "recv": False}
        await ws.send(cbor2.dumps(frame))
        (data,) = await ws.receive()
        return ws, cbor2.loads(data)

    async def read_acks(ws: RawWebSocket, sent_at: dict[int, float]) -> None:
        while True:
            for data in await ws.receive():
                if data[1:8] != ACK_KEY:
                    continue
                t = time.perf_counter()
                sent = sent_at.pop(cbor2.loads(data)["id"], None)
                if sent is not None and (p := phase_of(phases, sent)) is not None:
                    p.acks.append(t - sent)

    async def read_batches(index: int, ws: RawWebSocket, sent_at: dict[int, float]) -> None:
        while True:
            for data in await ws.receive():
                if data[1:10] != BATCH_KEY:
                    continue
                t = time.perf_counter()
                batch = cbor2.loads(data)
                if len(batch["msgs"]) != PAGE:
                    raise RuntimeError(f"a cold page of {len(batch['msgs'])} events")
                sent = sent_at.pop(batch["id"], None)
                if sent is not None and (p := phase_of(phases, sent)) is not None:
                    p.syncs.append(t - sent)
                idle.append(index)

    async with trio.open_nursery() as nursery:
        for c in range(1, pairs + 1):
            for user in names[c].split(":")[1:]:
                ws, _ = await hello(user)
                sent_at: dict[int, float] = {}
                loaders.append((ws, names[c], sent_at))
                nursery.start_soon(read_acks, ws, sent_at)
        for c in range(pairs + 1, pairs + 1 + spec["readers"]):
            user = "m1" if c == pairs + spec["readers"] else names[c].split(":")[1]
            conv = GROUP if user == "m1" else names[c]
            ws, welcome = await hello(user)
            (head,) = [s["head"] for s in welcome["convs"] if s["conv"] == conv]
            sent_at = {}
            readers.append((ws, conv, head, sent_at))
            idle.append(len(readers) - 1)
            nursery.start_soon(read_batches, len(readers) - 1, ws, sent_at)
        gc.freeze()
        gc.disable()

        numbers = itertools.count(1)

        async def pace_load() -> None:
            """Open loop: connection i sends every len/rate seconds, one task for all (as
            tools/bench_durability.py paces)."""
            count = len(loaders)
            interval = count / rate
            offsets = [i / count * interval for i in range(count)]
            first = trio.current_time()
            for k in itertools.count():
                round_, j = divmod(k, count)
                due = first + round_ * interval + offsets[j]
                if due > trio.current_time():
                    await trio.sleep_until(due + 0.001)
                elif k % 64 == 0:
                    await trio.lowlevel.checkpoint()
                if not loading[0]:
                    continue
                ws, conv, sent_at = loaders[j]
                n = next(numbers)
                sent_at[n] = time.perf_counter()
                frame = {"op": "send", "id": n, "conv": conv, "cmid": f"L{n}", "body": "x" * 100}
                await ws.send(cbor2.dumps(frame))

        syncing = [False]
        loading = [True]
        skipped = [0]

        async def pace_syncs() -> None:
            interval = 1 / spec["sync_rate"]
            due = trio.current_time()
            while True:
                due += interval
                await trio.sleep_until(due)
                if not syncing[0]:
                    continue
                if not idle:
                    skipped[0] += 1
                    continue
                index = idle.pop(rng.randrange(len(idle)))
                ws, conv, head, sent_at = readers[index]
                n = next(numbers)
                after = rng.randrange(0, head - PAGE)
                sent_at[n] = time.perf_counter()
                frame = {"op": "sync", "id": n, "conv": conv, "after": after, "limit": PAGE}
                await ws.send(cbor2.dumps(frame))

        nursery.start_soon(pace_load)
        nursery.start_soon(pace_syncs)
        await trio.sleep(spec["warmup"])
        store = [Path(p) for p in spec["store_files"]]
        for phase in phases:
            await trio.to_thread.run_sync(drop_cache, store)
            await trio.sleep(0.5)
            steal = Steal()
            cpu0, gen0 = process_cpu(server_pid), process_cpu(os.getpid())
            written0 = written_bytes(server_pid)
            disk = Disk(store[0])
            skipped[0] = 0
            phase.start, phase.end = time.perf_counter(), math.inf
            syncing[0] = phase.name in ("with", "alone")
            loading[0] = phase.name != "alone"
            await trio.sleep(spec["seconds"])
            phase.end = time.perf_counter()
            syncing[0], loading[0] = False, True
            elapsed = phase.end - phase.start
            s0, s1 = steal.pct()
            phase.figures = {
                "server_cpu_pct": 100 * (process_cpu(server_pid) - cpu0) / elapsed,
                "gen_cpu_pct": 100 * (process_cpu(os.getpid()) - gen0) / elapsed,
                "steal_server_pct": s0,
                "steal_gen_pct": s1,
                "syncs_skipped": skipped[0],
                "server_written_mb_per_s": (written_bytes(server_pid) - written0) / elapsed / 1e6,
                **disk.figures(),
                "seconds": elapsed,
            }
        await trio.sleep(1)  # the last phase's replies
        nursery.cancel_scope.cancel()
    rows = []
    for phase in phases:
        sync_ms = [s * 1000 for s in phase.syncs]
        rows.append(
            {
                "phase": phase.name,
                "acks_per_s": len(phase.acks) / phase.figures["seconds"],
                "ack_p50_ms": percentile(phase.acks, 50) * 1000,
                "ack_p99_ms": percentile(phase.acks, 99) * 1000,
                "syncs": len(sync_ms),
                "sync_p50_ms": percentile(sync_ms, 50),
                "sync_p99_ms": percentile(sync_ms, 99),
                "sync_max_ms": max(sync_ms, default=float("nan")),
                **phase.figures,
            }
        )
    return rows


def cold(args: argparse.Namespace) -> None:
    report = build_report(args.data)
    data = copy_data(args.data, args.scratch)
    order = [("without", "with"), ("with", "without")]
    phases = [name for i in range(args.rounds) for name in order[i % 2]]
    phases = ["alone", *phases, "alone"]  # the floor: the same syncs with no load at all
    server = Server(data, "0", *SERVER_ARGS)
    try:
        spec = {
            "port": server.port,
            "server_pid": server.process.pid,
            "convs": report["convs"],
            "pairs": args.pairs,
            "rate": args.rate,
            "readers": args.readers,
            "sync_rate": args.sync_rate,
            "phases": phases,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "store_files": [str(p) for p in store_files(data)],
        }
        command = [sys.executable, __file__, "_cold", json.dumps(spec)]
        out = subprocess.run(pinned("1", command), capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"generator failed:\n{out.stderr}")
        rows: list[dict[str, Any]] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.stop()
        shutil.rmtree(data)
    for row in rows:
        row["gen_bound"] = row["gen_cpu_pct"] > 100 * GENERATOR_BOUND
    print_table(rows)
    with_ = [r["ack_p99_ms"] for r in rows if r["phase"] == "with"]
    without = [r["ack_p99_ms"] for r in rows if r["phase"] == "without"]
    syncs = ", ".join(f"{r['sync_p99_ms']:.2f}" for r in rows if r["phase"] == "with")
    alone = ", ".join(f"{r['sync_p99_ms']:.2f}" for r in rows if r["phase"] == "alone")
    ratio = statistics.median(with_) / statistics.median(without)
    print(f"sync p99 under the load: {syncs} ms; alone: {alone} ms")
    print(
        f"ack p99 with / without syncs, medians: {statistics.median(with_):.2f} / "
        f"{statistics.median(without):.2f} ms = {ratio:.2f}"
    )


# --- dedup lookups and the cmid filter ------------------------------------------------------


def lookups(args: argparse.Namespace) -> None:
    """What a send pays when the filter cannot rule its cmid out: how often that happens
    for new cmids, and what the store lookup (`HistoryStore.find_cmid`) costs, cold, in a
    direct conversation and in the big group. The same lookups through the
    `events_cmid` index by name (`INDEXED BY`) say whether the planner's choice matters."""
    report = build_report(args.data)
    events, convs = report["events"], report["convs"]
    (_, newest), *_ = reversed(list_snapshots(snapshot_dir(args.data)))
    snapshot = decode(newest.read_bytes())
    assert snapshot.filter is not None
    cmids = CmidFilter.from_state(snapshot.filter)
    names = conv_names(convs)
    rng = random.Random(16)
    probes = args.probes
    maybe = 0
    for k in range(probes):
        c = rng.randrange(1, convs)
        maybe += cmids.may_contain(names[c], f"u{2 * c}", f"new-{k}")
    rows: list[dict[str, Any]] = [
        {
            "what": "new cmids the filter cannot rule out",
            "share_pct": 100 * maybe / probes,
            "of": probes,
            "filters": len(snapshot.filter),
            "keys": cmids.keys,
        }
    ]
    print_table(rows)
    heads = {state.conv: state.head for state in snapshot.conversations}
    sample = []
    for _ in range(args.lookups):
        c = 0 if rng.random() < 0.5 else rng.randrange(1, convs)
        seq = rng.randrange(2, heads[names[c]] + 1)
        sample.append((names[c], seq))
    store = HistoryStore(store_path(args.data))
    # The sender of a stored event is in its row: read it once, before timing anything.
    found = {(conv, seq): e for conv, seq in sample for e in store.read_page(conv, seq, seq)}
    results = []
    db = sqlite3.connect(store_path(args.data))
    ids = dict(db.execute("SELECT name, id FROM convs"))
    by_index = (
        "SELECT row FROM events INDEXED BY events_cmid WHERE conv = ? AND sender = ? AND cmid = ?"
    )
    for how in ("find_cmid", "INDEXED BY events_cmid"):
        for kind in ("dm", "group"):
            drop_cache(store_files(args.data))
            times = []
            for conv, seq in sample:
                if (conv == GROUP) != (kind == "group"):
                    continue
                e = found[(conv, seq)]
                assert e.cmid is not None
                t0 = time.perf_counter()
                if how == "find_cmid":
                    got = store.find_cmid(conv, e.sender, e.cmid)
                    assert got == (e.seq, e.ts), (got, e)
                else:
                    row = db.execute(by_index, (ids[conv], e.sender, e.cmid)).fetchone()
                    assert row is not None
                times.append((time.perf_counter() - t0) * 1000)
            results.append(
                {
                    "lookup": how,
                    "conversation": kind,
                    "lookups": len(times),
                    "p50_ms": percentile(times, 50),
                    "p99_ms": percentile(times, 99),
                    "max_ms": max(times),
                }
            )
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT row FROM events WHERE conv = ? AND sender = ? AND cmid = ?",
        (1, "m1", "c1"),
    ).fetchall()
    db.close()
    store.close()
    print(f"cold lookups of stored cmids ({events:,} events); find_cmid's plan: {plan[0][-1]}")
    print_table(results)


# --- durable writes against a baseline checkout ------------------------------------------------


def write_run(
    target: str, bin_dir: Path, source: Path | None, args: argparse.Namespace, rate: float
) -> dict[str, Any]:
    """A fresh server of `target` (on an empty directory, or a copy of `source`), one
    generator run (tools/bench_durability.py's) against it."""
    args.scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        data = Path(tmp) / "data" if source is None else copy_data(source, Path(tmp))
        server = Server(data, "0", *SERVER_ARGS, bin_dir=bin_dir)
        try:
            cpu0 = server.cpu_seconds()
            written0 = written_bytes(server.process.pid)
            disk = Disk(data)
            steal = Steal()
            started = time.perf_counter()
            result = run_generator(server.port, args.conns, args.seconds, rate)
            elapsed = time.perf_counter() - started
            s0, s1 = steal.pct()
            cpu = server.cpu_seconds() - cpu0
            written = written_bytes(server.process.pid) - written0
            device = disk.figures()
            rss = server.rss_bytes()
        finally:
            server.stop()
    gen_share = result["gen_cpu_s"] / elapsed
    return {
        "target": target,
        "mode": "closed loop" if not rate else f"paced {rate:,.0f}/s",
        **result,
        "server_cpu_s": cpu,
        "server_cpu_pct": 100 * cpu / elapsed,
        "gen_cpu_pct": 100 * gen_share,
        "gen_bound": gen_share > GENERATOR_BOUND,
        "steal_server_pct": s0,
        "steal_gen_pct": s1,
        "rss_mb": rss / 1e6,
        # Over the whole generator run (connects and warm-up too): a floor on the rate.
        "server_written_mb_per_s": written / elapsed / 1e6,
        "disk_read_ms": device["disk_read_ms"],
        "disk_write_ms": device["disk_write_ms"],
    }


def writes(args: argparse.Namespace) -> None:
    base_bin = args.baseline.resolve() / ".venv" / "bin"
    if not (base_bin / "imcore").exists():
        raise SystemExit(f"{args.baseline} has no .venv/bin/imcore (run make venv there)")
    targets: list[tuple[str, Path, Path | None]] = [
        ("baseline", base_bin, None),
        ("imcore", BIN, None),
    ]
    if args.large is not None:
        targets.append(("imcore, large store", BIN, args.large))
    rows: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for target, bin_dir, source in targets if i % 2 == 0 else targets[::-1]:
            row = write_run(target, bin_dir, source, args, 0)
            print(json.dumps(row), flush=True)
            rows.append(row)
    peaks = {
        t: statistics.mean(r["acked_per_s"] for r in rows if r["target"] == t)
        for t, _, _ in targets
    }
    rate = peaks["baseline"] / 2
    for i in range(args.paced_runs):
        for target, bin_dir, source in targets if i % 2 == 0 else targets[::-1]:
            row = write_run(target, bin_dir, source, args, rate)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print_table(rows)
    summary = []
    for target, _, _ in targets:
        paced = [
            r["ack_p99_ms"] for r in rows if r["target"] == target and r["mode"] != "closed loop"
        ]
        summary.append(
            {
                "target": target,
                "peak_mean": peaks[target],
                "peak/baseline": peaks[target] / peaks["baseline"],
                "paced_p99_median_ms": statistics.median(paced) if paced else float("nan"),
            }
        )
    base_p99 = summary[0]["paced_p99_median_ms"]
    for row in summary:
        row["paced_p99/baseline"] = row["paced_p99_median_ms"] / base_p99
    print(f"closed-loop means over {args.rounds} rounds; paced at {rate:,.0f}/s")
    print_table(summary)


def main() -> None:
    if sys.argv[1:2] == ["_cold"]:
        print(json.dumps(trio.run(cold_generate, json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scratch", type=Path, default=Path(tempfile.gettempdir()) / "bench-history"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("restart")
    p.add_argument("--small", type=Path, required=True)
    p.add_argument("--large", type=Path, required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--settle", type=float, default=3.0, help="seconds before the second RSS")
    p.set_defaults(run=restart)
    p = commands.add_parser("cold")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--pairs", type=int, default=500, help="DM pairs of the paced load")
    p.add_argument("--rate", type=float, default=2000, help="the load's sends/s, all together")
    p.add_argument("--readers", type=int, default=200, help="connections that sync")
    p.add_argument("--sync-rate", type=float, default=50, help="cold syncs/s, all together")
    p.add_argument("--rounds", type=int, default=2, help="pairs of phases, ABBA")
    p.add_argument("--seconds", type=float, default=10, help="per phase")
    # A restarted server's hot tails start empty; while they fill, the collector's full
    # collections (at each doubling of the memory blocks in use) pause it for 0.2 s and
    # more, whatever the phase. At 2,000 sends/s the tails reach their 64 MiB after about
    # 75 s and the collections stop: measure after that.
    p.add_argument("--warmup", type=float, default=90)
    p.set_defaults(run=cold)
    p = commands.add_parser("lookups")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--probes", type=int, default=200_000, help="new cmids asked of the filter")
    p.add_argument("--lookups", type=int, default=400, help="stored cmids looked up")
    p.set_defaults(run=lookups)
    p = commands.add_parser("writes")
    p.add_argument("--baseline", type=Path, required=True, help="a checkout with its .venv")
    p.add_argument("--large", type=Path, help="also this tree on a copy of this directory")
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--paced-runs", type=int, default=2)
    p.set_defaults(run=writes)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
