"""A short locust run through locust's own entry point, so the locustfile cannot rot."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING

import trio

from tools.loadtest import run

if TYPE_CHECKING:
    from pathlib import Path


async def test_a_smoke_run_reports_the_chat_requests_and_no_failure(tmp_path: Path) -> None:
    summary = await trio.to_thread.run_sync(run, 20, 10, 20, tmp_path)
    assert summary["exit_code"] == 0
    assert summary["failures"] == 0
    with (tmp_path / "run_stats.csv").open() as f:
        names = {row["Name"] for row in csv.DictReader(f)}
    assert {"hello", "send→ack", "deliver"} <= names
    report = (tmp_path / "report.html").read_text()
    assert '"deliver"' in report
    assert '"hello"' in report
