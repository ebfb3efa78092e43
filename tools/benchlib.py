"""Shared pieces of the benchmark scripts: a server subprocess pinned to a core, CPU
accounting from /proc, percentiles, and a table printer."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from imcore.core.frames import Event

BIN = Path(sys.executable).parent
SECRET = "benchmark-secret-benchmark-secret-benchmark"
LISTENING = re.compile(r"imcore listening on ws://([\d.]+):(\d+)/ws")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pinned(cpus: str | None, command: list[str]) -> list[str]:
    """`command` run under taskset on `cpus` when taskset exists and cpus is given."""
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *command]
    return command


class Server:
    """`imcore serve` as a subprocess, for measuring; stopped with SIGTERM. `bin_dir`: the
    virtual environment's bin/ to run it from (another checkout's, for a baseline)."""

    def __init__(self, data_dir: Path, cpus: str | None, *args: str, bin_dir: Path = BIN) -> None:
        command = [str(bin_dir / "imcore"), "serve", "--port", "0", "--admin-port", "0"]
        command += ["--data-dir", str(data_dir)]
        command += ["--auth-secret", SECRET, "--log-level", "warning", *args]
        self.process = subprocess.Popen(
            pinned(cpus, command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = LISTENING.search(line)
        if not match:
            assert self.process.stderr is not None
            raise RuntimeError(f"server did not start: {line!r} {self.process.stderr.read()}")
        self.port = int(match.group(2))

    def cpu_seconds(self) -> float:
        return process_cpu(self.process.pid)

    def rss_bytes(self) -> int:
        return rss_of(self.process.pid)

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=30)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code


def rss_of(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def steal_seconds(cpu: int) -> float:
    """CPU seconds that the hypervisor gave to someone else while `cpu` had work (the
    "steal" column of /proc/stat; 0 where there is none). On a shared virtual machine it
    comes in bursts, and every burst is a stall of whatever runs on that CPU."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        fields = line.split()
        if fields[0] == f"cpu{cpu}":
            return int(fields[8]) / CLOCK_TICKS if len(fields) > 8 else 0.0
    return 0.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rows as an aligned text table, then the same as JSON."""
    if not rows:
        return
    keys = list(rows[0])
    width = {k: max(len(k), *(len(_fmt(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(width[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r[k]).ljust(width[k]) for k in keys))
    print(json.dumps(rows))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def now() -> float:
    return time.perf_counter()


def message_event(conv: str, seq: int, ts: int, sender: str) -> tuple[Event, int]:
    """The synthetic message the benchmarks store, and its body's size as JSON (bytes):
    ~48-byte bodies from a phone, the same in every benchmark that builds history."""
    body = {"text": f"message {seq} of {conv}", "n": seq}
    event = Event(
        conv=conv,
        seq=seq,
        ts=ts,
        sender=sender,
        dev="phone",
        at=1_796_000_000_000 + ts,
        cmid=f"c{seq}",
        body=body,
    )
    return event, len(json.dumps(body))
