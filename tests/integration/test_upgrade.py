"""A data directory written by imcore 0.1.0 (format 1: events in snapshots) is upgraded on
its first start with nothing lost; a directory of a newer format is refused."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from imcore.config import build
from imcore.core.snapshot import decode
from imcore.server import serve
from imcore.server.datadir import FORMAT_VERSION, StartupError
from imcore.server.layout import format_path, list_snapshots, snapshot_dir
from tests.helpers.client import open_client
from tests.helpers.core import SECRET

if TYPE_CHECKING:
    from imcore.server import RunningServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


async def history_of(server: RunningServer, user: str, conv: str) -> tuple[Any, list[Any]]:
    async with open_client(server, user, recv=False) as client:
        summary = next(s for s in client.welcome["convs"] if s["conv"] == conv)
        msgs: list[Any] = []
        after = 0
        while True:
            batch = await client.request(op="sync", conv=conv, after=after, limit=7)
            msgs += batch["msgs"]
            if not batch["more"]:
                return summary, msgs
            after = batch["msgs"][-1]["seq"]


async def test_a_format_1_directory_is_upgraded_with_every_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "format1", data, ignore=shutil.ignore_patterns("README.md"))
    expected = json.loads((FIXTURES / "format1.expected.json").read_text())
    values = {"port": 0, "admin_port": 0, "data_dir": data, "auth_secret": SECRET}
    caplog.set_level(logging.INFO)
    for run in range(2):  # the upgrade, then a plain start of the upgraded directory
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                server: RunningServer = await nursery.start(serve, build(values))
                for conv, was in expected.items():
                    summary, msgs = await history_of(server, "alice", conv)
                    assert summary["head"] == was["head"]
                    by_seq = {m["seq"]: m for m in msgs}
                    for event in was["events"]:
                        assert by_seq[event["seq"]] == event, (run, conv, event["seq"])
                    seqs = [m["seq"] for m in msgs]
                    assert seqs == list(range(summary["floor"], was["head"] + 1))
                dm, dm_msgs = await history_of(server, "bob", "dm:alice:bob")
                unread = sum(m["seq"] > 20 and m["from"] != "bob" for m in dm_msgs)
                assert (dm["read"], dm["unread"], dm["peer_read"]) == (20, unread, 0)
                assert unread > 20  # messages from both runs
                team, _ = await history_of(server, "alice", "g:team")
                assert team["read"] == 10
                first = next(m for m in dm_msgs if m["from"] == "bob")
                async with open_client(server, "bob") as bob:
                    dup = await bob.request(
                        op="send", conv="dm:alice:bob", cmid=first["cmid"], body="again"
                    )
                    assert (dup["seq"], dup.get("dup")) == (first["seq"], True)
                server.stop.set()
        if run == 0:
            upgrades = [r for r in caplog.records if "upgrad" in r.getMessage()]
            assert upgrades, "the upgrade says so in the log"
            caplog.clear()
    assert format_path(data).read_text().strip() == str(FORMAT_VERSION)
    newest = list_snapshots(snapshot_dir(data))[-1][1]
    assert decode(newest.read_bytes()).version == 3
    assert not [r for r in caplog.records if "upgrad" in r.getMessage()]


async def test_a_newer_format_is_refused_clearly(tmp_path: Path) -> None:
    format_path(tmp_path).write_text(f"{FORMAT_VERSION + 1}\n")
    values = {"port": 0, "admin_port": 0, "data_dir": tmp_path, "auth_secret": SECRET}
    with pytest.raises(StartupError, match=f"format {FORMAT_VERSION + 1}, newer"):
        await serve(build(values))


async def test_a_format_1_snapshot_with_no_log_after_it_is_rewritten(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "format1", data, ignore=shutil.ignore_patterns("README.md", "wal"))
    values = {"port": 0, "admin_port": 0, "data_dir": data, "auth_secret": SECRET}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server: RunningServer = await nursery.start(serve, build(values))
            summary, msgs = await history_of(server, "alice", "g:team")
            assert [m["seq"] for m in msgs] == list(range(1, summary["head"] + 1))
            server.stop.set()
    (newest,) = list_snapshots(snapshot_dir(data))
    assert decode(newest[1].read_bytes()).version == 3
