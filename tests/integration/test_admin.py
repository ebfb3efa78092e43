"""The admin port and `imcore-admin`'s online commands against a real server (spec §11)."""

from __future__ import annotations

import http.client
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from imcore.core import auth
from tests.helpers.client import open_client
from tests.helpers.core import SECRET

if TYPE_CHECKING:
    from imcore.server import RunningServer

BIN = os.path.dirname(sys.executable)
DM = "dm:alice:bob"


def admin_token(admin: bool = True) -> str:
    import time

    claims = {"admin": True} if admin else {}
    return auth.mint("ops", SECRET, now_ms=int(time.time() * 1000), **claims)


def fetch(server: RunningServer, method: str, path: str, token: str | None) -> tuple[int, Any]:
    """One request, as the server answers it: http.client follows no redirect."""
    connection = http.client.HTTPConnection("127.0.0.1", server.admin_port, timeout=10)
    try:
        connection.request(
            method, path, headers={"Authorization": f"Bearer {token}"} if token else {}
        )
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


async def call(server: RunningServer, method: str, path: str, token: str | None = "") -> Any:
    return await trio.to_thread.run_sync(
        fetch, server, method, path, admin_token() if token == "" else token
    )


async def admin_cli(server: RunningServer, *args: str, token: str | None = None) -> Any:
    command = [os.path.join(BIN, "imcore-admin"), *args]
    command += ["--url", f"http://127.0.0.1:{server.admin_port}", "--token", token or admin_token()]
    return await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)


async def traffic(server: RunningServer) -> None:
    async with open_client(server, "alice") as alice:
        for i in range(3):
            await alice.request(op="send", conv=DM, cmid=f"m{i}", body=i)
        await alice.request(op="group.create", conv="g:ops", members=["bob"], title="Ops")


async def test_every_endpoint_answers_with_an_admin_token(server: RunningServer) -> None:
    with trio.fail_after(20):
        await traffic(server)
        async with open_client(server, "bob", device="phone"):
            assert await call(server, "GET", "/healthz", token=None) == (200, {"ok": True})
            status, body = await call(server, "GET", "/status")
            assert status == 200
            assert (body["connections"], body["users_online"], body["conversations"]) == (1, 1, 2)
            assert (body["events"], body["wal_lsn"], body["fsync"]) == (4, 4, "always")
            assert set(body["fsync_ms"]) == {"p50", "p99", "max"}
            status, conns = await call(server, "GET", "/conns?limit=10")
            assert [c["user"] for c in conns["conns"]] == ["bob"]
            status, user = await call(server, "GET", "/users/bob")
            assert (user["online"], [d["device"] for d in user["devices"]]) == (True, ["phone"])
            assert {c["conv"] for c in user["convs"]} == {DM, "g:ops"}
            status, conv = await call(server, "GET", "/conversations/g:ops")
            assert conv["members"] == [
                {"user": "alice", "role": "owner", "read": 0},
                {"user": "bob", "role": "member", "read": 0},
            ]
            assert conv["last_events"][0]["sys"]["type"] == "create"
            assert (await call(server, "GET", "/conversations/g:nope"))[0] == 404
            status, metrics = await call(server, "GET", "/metrics")
            assert status == 200
            assert 'imcore_frames_in_total{op="send"} 3.0' in metrics
            assert "imcore_sends_total 3.0" in metrics
            status, snap = await call(server, "POST", "/snapshot")
            assert (status, snap["lsn"], snap["written"]) == (200, 4, True)
        async with open_client(server, "bob", device="phone") as bob:
            assert await call(server, "POST", "/kick/bob") == (200, {"kicked": 1})
            assert await bob.closed_with() == 4003


@pytest.mark.parametrize("token", [None, "garbage", "client"])
async def test_without_an_admin_token_everything_but_healthz_is_401(
    server: RunningServer, token: str | None
) -> None:
    bearer = admin_token(admin=False) if token == "client" else token
    with trio.fail_after(10):
        for method, path in [("GET", "/status"), ("GET", "/metrics"), ("POST", "/kick/x")]:
            assert (await call(server, method, path, token=bearer))[0] == 401
        assert (await call(server, "GET", "/healthz", token=bearer))[0] == 200


async def test_metrics_parse_and_count_the_traffic(server: RunningServer) -> None:
    with trio.fail_after(20):
        async with open_client(server, "bob") as bob:
            await traffic(server)  # 3 DMs and a group with bob: 4 events pushed to bob
            await bob.next_msgs(4)
            await bob.request(op="nonsense")
        _status, text = await call(server, "GET", "/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("imcore_sends_total", ())] == 3
    assert samples[("imcore_frames_in_total", (("op", "send"),))] == 3
    assert samples[("imcore_frames_in_total", (("op", "group.create"),))] == 1
    assert samples[("imcore_frames_in_total", (("op", "other"),))] == 1
    assert samples[("imcore_errors_total", (("code", "unknown_op"),))] == 1
    # alice's 3 DMs reach her and bob (2 each), the group's create reaches both too
    assert samples[("imcore_deliveries_total", ())] == 8
    assert samples[("imcore_fanout_recipients_count", ())] == 4
    assert samples[("imcore_ack_seconds_count", ())] == 4
    assert samples[("imcore_fsync_seconds_count", ())] >= 1
    assert samples[("imcore_closes_total", (("code", "by_client"),))] == 2


async def test_metrics_answers_on_metrics_itself_and_filters_by_name(
    server: RunningServer,
) -> None:
    names = {"imcore_sends_total", "imcore_frames_in_total"}
    with trio.fail_after(20):
        await traffic(server)
        whole = await call(server, "GET", "/metrics")
        only = await call(server, "GET", "/metrics?name[]=imcore_sends_total")
        two = await call(server, "GET", "/metrics?" + "&".join(f"name[]={n}" for n in names))
    assert (whole[0], only[0], two[0]) == (200, 200, 200)

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    every = samples(whole[1])
    assert every[("imcore_sends_total", ())] == 3
    assert {name for name, _ in every} > names
    assert samples(only[1]) == {("imcore_sends_total", ()): 3}
    assert samples(two[1]) == {k: v for k, v in every.items() if k[0] in names}


async def test_cli_commands_in_table_and_json_form(server: RunningServer) -> None:
    with trio.fail_after(60):
        await traffic(server)
        status = await admin_cli(server, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["conversations"] == 2
        table = await admin_cli(server, "status")
        assert b"imcore status" in table.stdout
        assert b"conversations" in table.stdout
        for args, expect in [
            (("conns",), b"connections"),
            (("user", "alice"), b"dm:alice:bob"),
            (("conv", "g:ops"), b"owner"),
            (("snapshot",), b"lsn"),
            (("kick", "nobody"), b"kicked"),
        ]:
            shown = await admin_cli(server, *args)
            assert shown.returncode == 0, shown.stderr
            assert expect in shown.stdout
            as_json = await admin_cli(server, *args, "--json")
            assert as_json.returncode == 0
            json.loads(as_json.stdout)
        missing = await admin_cli(server, "conv", "g:nope")
        assert missing.returncode == 1
        assert b"no such conversation" in missing.stderr


async def test_cli_says_clearly_when_the_server_is_down_or_the_token_wrong(
    server: RunningServer,
) -> None:
    with trio.fail_after(30):
        refused = await admin_cli(server, "status", token="not-a-token")
        assert refused.returncode == 4
        assert b"token was refused" in refused.stderr
        down = await trio.run_process(
            [
                os.path.join(BIN, "imcore-admin"),
                "status",
                "--url",
                "http://127.0.0.1:9",
                "--token",
                "x",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert down.returncode == 3
        assert b"is the server running?" in down.stderr


async def test_offline_inspect_and_wal_dump_read_the_data_directory(
    server: RunningServer, settings: dict[str, object]
) -> None:
    with trio.fail_after(60):
        await traffic(server)
        async with open_client(server, "bob", device="phone") as bob:
            await bob.request(op="recv", conv=DM, seq=3)
            await bob.request(op="read", conv=DM, seq=2)
        data_dir = str(settings["data_dir"])  # read-only views: safe beside a running server
        inspect = [os.path.join(BIN, "imcore-admin"), "inspect", "--data-dir", data_dir]
        shown = await trio.run_process([*inspect, "--json"], capture_stdout=True)
        view = json.loads(shown.stdout)
        assert (view["conversations"], view["events"], view["last_lsn"]) == (2, 4, 6)
        assert view["damage"] is None
        conv = await trio.run_process([*inspect, "--conv", "g:ops", "--json"], capture_stdout=True)
        assert json.loads(conv.stdout)["members"][0] == {
            "user": "alice",
            "role": "owner",
            "read": 0,
        }
        conv = await trio.run_process([*inspect, "--conv", DM, "--json"], capture_stdout=True)
        assert json.loads(conv.stdout)["members"] == [
            {"user": "alice", "role": "member", "read": 0, "delivered": 0},
            {"user": "bob", "role": "member", "read": 2, "delivered": 3},
        ]
        user = await trio.run_process([*inspect, "--user", "alice", "--json"], capture_stdout=True)
        (dm,) = [c for c in json.loads(user.stdout)["convs"] if c["conv"] == DM]
        assert (dm["peer_read"], dm["peer_delivered"]) == (2, 3)
        table = await trio.run_process([*inspect, "--user", "bob"], capture_stdout=True)
        assert b"g:ops" in table.stdout
        assert b"peer_delivered" in table.stdout
        dump = await trio.run_process(
            [os.path.join(BIN, "imcore-admin"), "wal", "dump", "--data-dir", data_dir],
            capture_stdout=True,
        )
        records = [json.loads(line) for line in dump.stdout.splitlines()]
        assert [r["lsn"] for r in records] == [1, 2, 3, 4, 5, 6]
        assert records[3]["record"][0] == "g:ops"
        assert [r["kind"] for r in records[3:]] == ["event", "delivered", "read"]
        assert records[4]["record"] == [DM, "bob", "phone", 3]
