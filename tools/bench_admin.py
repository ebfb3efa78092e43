"""Admin endpoints under load (figures for docs/benchmarks.md; never run as a test).

    python tools/bench_admin.py [--conns 10000] [--pairs 100] [--rate 400]

1. The server (CPU 0) holds `--conns` idle authenticated connections from a generator
   process (CPU 1); /status and /conns?limit=100 are timed.
2. A paced DM load runs twice, once alone and once while /conns is walked 100 pages deep;
   the ack p50/p99 of both runs are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import cbor2
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imcore.core import auth
from imcore.wsclient import RawWebSocket
from tools.benchlib import SECRET, Server, percentile, pinned, print_table, process_cpu

ADMIN_PORT = 18_790
ACK_KEY = cbor2.dumps("op") + cbor2.dumps("ack")


async def hold(port: int, conns: int, ready: Path) -> None:
    """Open `conns` idle connections that said hello, touch `ready`, then hold them."""
    now_ms = int(time.time() * 1000)
    sockets = []
    for i in range(conns):
        ws = await RawWebSocket.connect("127.0.0.1", port, "/ws", "imcore.v1.cbor")
        token = auth.mint(f"idle{i}", SECRET, now_ms=now_ms)
        await ws.send(cbor2.dumps({"op": "hello", "id": 0, "v": 1, "token": token, "device": "d"}))
        sockets.append(ws)
    for ws in sockets:
        await ws.receive()
    await trio.Path(ready).write_text("ok")
    async with trio.open_nursery() as nursery:
        for ws in sockets:
            nursery.start_soon(_drain, ws)


async def _drain(ws: RawWebSocket) -> None:
    while True:
        await ws.receive()  # answers the heartbeat pings


async def chat_load(port: int, pairs: int, rate: float, seconds: float) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    latencies: list[float] = []
    start = time.perf_counter() + 1

    async def pair(i: int) -> None:
        ws = await RawWebSocket.connect("127.0.0.1", port, "/ws", "imcore.v1.cbor")
        token = auth.mint(f"p{i}", SECRET, now_ms=now_ms)
        await ws.send(cbor2.dumps({"op": "hello", "id": 0, "v": 1, "token": token, "device": "d"}))
        await ws.receive()
        sent: dict[int, float] = {}

        async def read() -> None:
            while True:
                for data in await ws.receive():
                    if data[1:8] == ACK_KEY:
                        ack = cbor2.loads(data)
                        t0 = sent.pop(ack["id"], None)
                        if t0 is not None and t0 >= start:
                            latencies.append(time.perf_counter() - t0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            interval, n = pairs / rate, 0
            next_at = trio.current_time() + (i / pairs) * interval
            end = trio.current_time() + seconds + 1
            while trio.current_time() < end:
                await trio.sleep_until(next_at)
                next_at += interval
                n += 1
                sent[n] = time.perf_counter()
                frame = {
                    "op": "send",
                    "id": n,
                    "conv": f"dm:p{i}:p{i}",
                    "cmid": f"{n}",
                    "body": "x" * 100,
                }
                await ws.send(cbor2.dumps(frame))
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for i in range(pairs):
            nursery.start_soon(pair, i)
    return {
        "acks": len(latencies),
        "ack_p50_ms": percentile(latencies, 50) * 1000,
        "ack_p99_ms": percentile(latencies, 99) * 1000,
    }


def get(path: str, token: str) -> tuple[float, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{ADMIN_PORT}{path}")
    request.add_header("Authorization", f"Bearer {token}")
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    return time.perf_counter() - t0, body


def main() -> None:
    if sys.argv[1:2] == ["_hold"]:
        trio.run(hold, int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
        return
    if sys.argv[1:2] == ["_chat"]:
        result = trio.run(chat_load, int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), 8.0)
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=400)
    args = parser.parse_args()
    token = auth.mint("ops", SECRET, now_ms=int(time.time() * 1000), admin=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), "0", "--admin-port", str(ADMIN_PORT), "--send-rate", "100000")
        ready = Path(tmp) / "ready"
        holder = subprocess.Popen(
            pinned(
                "1",
                [sys.executable, __file__, "_hold", str(server.port), str(args.conns), str(ready)],
            )
        )
        while not ready.exists():
            time.sleep(0.2)
        rows = []
        for path in ("/status", "/conns?limit=100", "/conns?offset=5000&limit=100"):
            times = [get(path, token)[0] for _ in range(20)]
            rows.append(
                {
                    "request": path,
                    "connections": args.conns,
                    "p50_ms": percentile(times, 50) * 1000,
                    "max_ms": max(times) * 1000,
                }
            )
        print_table(rows)

        def load(walk: bool) -> dict[str, Any]:
            command = pinned(
                "1",
                [
                    sys.executable,
                    __file__,
                    "_chat",
                    str(server.port),
                    str(args.pairs),
                    str(args.rate),
                ],
            )
            chat = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            walked = 0.0
            if walk:
                time.sleep(3)
                t0 = time.perf_counter()
                for page in range(100):
                    get(f"/conns?offset={page * 100}&limit=100", token)
                walked = time.perf_counter() - t0
            out, _ = chat.communicate()
            return {
                "walk_100_pages": walk,
                "walk_s": walked,
                **json.loads(out.strip().splitlines()[-1]),
            }

        cpu0 = server.cpu_seconds()
        results = [load(False), load(True)]
        print_table(results)
        server_cpu = server.cpu_seconds() - cpu0
        holder_cpu = process_cpu(holder.pid)
        print(f"server CPU during the two loads: {server_cpu:.1f} s; holder CPU {holder_cpu:.1f} s")
        holder.kill()
        server.stop()


if __name__ == "__main__":
    main()
