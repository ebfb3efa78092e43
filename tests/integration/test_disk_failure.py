"""A disk that fails under the log: `unavailable` for writes, reads go on (spec §7)."""

from __future__ import annotations

import urllib.error
import urllib.request
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio

from imcore.config import build
from imcore.server import RunningServer, serve
from tests.helpers.client import open_client
from tests.helpers.core import SECRET
from tests.helpers.files import FailingFiles

if TYPE_CHECKING:
    from pathlib import Path

DM = "dm:alice:bob"


@pytest.mark.parametrize("on", ["write", "fsync"])
async def test_a_failing_disk_refuses_writes_and_keeps_serving_reads(
    nursery: trio.Nursery, tmp_path: Path, on: str
) -> None:
    # the FORMAT file takes one fsync, the segment's header one write and one fsync, each
    # send one more
    files = FailingFiles(ok=4 + (on == "fsync"), on=on)
    config = build({"port": 0, "admin_port": 0, "data_dir": tmp_path, "auth_secret": SECRET})
    server: RunningServer = await nursery.start(partial(serve, config, files=files))
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice, open_client(server, "bob") as bob:
            for i in range(3):
                ack = await alice.request(op="send", conv=DM, cmid=f"ok{i}", body=i)
                assert (ack["op"], ack["seq"]) == ("ack", i + 1)
            refused = await alice.request(op="send", id="lost", conv=DM, cmid="lost", body=3)
            assert (refused["op"], refused["code"], refused["id"]) == (
                "error",
                "unavailable",
                "lost",
            )
            calls = files.calls
            again = await bob.request(op="send", conv=DM, cmid="later", body=4)
            assert again["code"] == "unavailable"
            group = await bob.request(op="group.create", conv="g:x")
            assert group["code"] == "unavailable"
            assert files.calls == calls, "a failed log must not be written to again"
            # reads go on, and show only what was acked
            batch = await bob.request(op="sync", conv=DM, after=0)
            assert [m["cmid"] for m in batch["msgs"]] == ["ok0", "ok1", "ok2"]
            assert (await bob.request(op="convs"))["convs"][0]["head"] == 3
            assert (await bob.request(op="ping"))["op"] == "pong"
            # a recv that would move a delivered position is a write too
            assert (await bob.request(op="recv", conv=DM, seq=3))["code"] == "unavailable"
            seqs = [m["seq"] for m in await bob.next_msgs(3)]
            assert seqs == [1, 2, 3]
            health = await trio.to_thread.run_sync(healthz, server.admin_port)
            assert health[0] == 503


def healthz(port: int) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
