"""A short locust run through `make loadtest`'s own script, so the locustfile cannot rot."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import trio

LOADTEST = Path(__file__).resolve().parents[2] / "tools" / "loadtest.py"


async def test_a_smoke_run_reports_the_chat_requests_and_no_failure(tmp_path: Path) -> None:
    command = [sys.executable, str(LOADTEST), "--users", "20", "--seconds", "10"]
    command += ["--spawn-rate", "20", "--out", str(tmp_path)]
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]  # locust's own exit code
    with (tmp_path / "run_stats.csv").open() as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    assert {"hello", "send→ack", "deliver"} <= set(stats)
    assert stats["Aggregated"]["Failure Count"] == "0"
    report = (tmp_path / "report.html").read_text()
    assert '"deliver"' in report
    assert '"hello"' in report
