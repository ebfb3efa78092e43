"""`make loadtest`: a server on a temporary data dir, locust headless against it, a summary.

    python tools/loadtest.py [--users 200] [--seconds 60] [--spawn-rate 50] [--out DIR]

Writes loadtests/out/run_*.csv and loadtests/out/report.html (or in --out); prints sends/s,
deliveries/s, p50/p99 and failures, with the CPU seconds of the server (CPU 0) and of
locust (CPU 1): locust is much slower per connection than the server, and says so here.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.benchlib import BIN, SECRET, Server, pinned

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "loadtests" / "out"


def run(users: int, seconds: int, spawn_rate: int, out: Path = OUT) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), "0")
        command = [
            str(BIN / "locust"),
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(spawn_rate),
            "--run-time",
            f"{seconds}s",
            "--host",
            f"ws://127.0.0.1:{server.port}/ws",
            "--csv",
            str(out / "run"),
            "--html",
            str(out / "report.html"),
            "--only-summary",
        ]
        env = {**os.environ, "IMCORE_AUTH_SECRET": SECRET}
        started = time.time()
        cpu0 = server.cpu_seconds()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            locust = subprocess.Popen(pinned("1", command), env=env)
            code = locust.wait()
        except BaseException:
            server.stop()
            raise
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        locust_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        server_cpu = server.cpu_seconds() - cpu0
        server.stop()
    with (out / "run_stats.csv").open() as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    total = stats.get("Aggregated", {})
    summary = {
        "exit_code": float(code),
        "seconds": time.time() - started,
        "sends_per_s": float(stats.get("send→ack", {}).get("Requests/s", 0)),
        "deliveries_per_s": float(stats.get("deliver", {}).get("Requests/s", 0)),
        "send_ack_p50_ms": float(stats.get("send→ack", {}).get("50%", 0) or 0),
        "send_ack_p99_ms": float(stats.get("send→ack", {}).get("99%", 0) or 0),
        "deliver_p50_ms": float(stats.get("deliver", {}).get("50%", 0) or 0),
        "deliver_p99_ms": float(stats.get("deliver", {}).get("99%", 0) or 0),
        "failures": float(total.get("Failure Count", 0)),
        "server_cpu_s": server_cpu,
        "locust_cpu_s": locust_cpu,
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--spawn-rate", type=int, default=50)
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the CSVs and report")
    args = parser.parse_args()
    summary = run(args.users, args.seconds, args.spawn_rate, args.out)
    for key, value in summary.items():
        print(f"{key:18} {value:,.1f}")
    print(f"report: {args.out / 'report.html'}")
    sys.exit(int(summary["exit_code"]))


if __name__ == "__main__":
    main()
