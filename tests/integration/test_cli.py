"""The command-line contract of spec §11, with real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import trio

from imcore.core import auth
from tests.helpers.client import Client, open_ws
from tests.helpers.process import ServerProcess

if TYPE_CHECKING:
    from pathlib import Path

BIN = os.path.dirname(sys.executable)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.path.join(BIN, args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


async def test_serve_prints_its_address_and_accepts_a_minted_token(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, secret=None)
    with trio.fail_after(20):
        try:
            running = await server.start()  # it waits for the listening line
            assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
            minted = run("imcore-admin", "token", "alice", "--data-dir", str(tmp_path))
            assert minted.returncode == 0, minted.stderr
            async with open_ws(running) as ws:
                client = Client(ws, "imcore.v1.json")
                hello = {"v": 1, "token": minted.stdout.strip(), "device": "cli"}
                welcome = await client.request(op="hello", **hello)
                assert (welcome["op"], welcome["user"]) == ("welcome", "alice")
        finally:
            await server.aclose()


def test_settings_come_from_flags_over_environment_over_file(tmp_path: Path) -> None:
    config = tmp_path / "imcore.toml"
    config.write_text('port = 1111\nmax_body = 1000\nfsync = "never"\n')
    env = {"IMCORE_PORT": "2222", "IMCORE_MAX_BODY": "2000"}
    shown = run(
        "imcore", "serve", "--config", str(config), "--port", "3333", "--print-config", env=env
    )
    assert shown.returncode == 0, shown.stderr
    lines = set(shown.stdout.splitlines())
    assert {"port = 3333", "max_body = 2000", 'fsync = "never"'} <= lines


def test_an_unknown_key_or_bad_value_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "imcore.toml"
    config.write_text("prot = 1\n")
    bad = run("imcore", "serve", "--config", str(config), "--print-config")
    assert (bad.returncode, bad.stderr.strip()) == (2, "imcore: unknown setting 'prot'")
    bad = run("imcore", "serve", "--fsync", "sometimes", "--print-config")
    assert bad.returncode == 2
    assert "'fsync'" in bad.stderr
    bad = run("imcore", "serve", "--print-config", env={"IMCORE_MAX_BODY": "lots"})
    assert bad.returncode == 2
    assert "'max_body'" in bad.stderr


def test_token_refuses_a_bad_user_id(tmp_path: Path) -> None:
    bad = run("imcore-admin", "token", "no way", "--secret", "s" * 32)
    assert bad.returncode == 2
    assert "user" in bad.stderr


def test_token_mints_a_map_for_a_tokens_file(tmp_path: Path) -> None:
    minted = run("imcore-admin", "token", "--json", "u0", "u1", "--secret", "s" * 32)
    assert minted.returncode == 0, minted.stderr
    tokens = json.loads(minted.stdout)
    assert set(tokens) == {"u0", "u1"}
    assert auth.verify(tokens["u1"], "s" * 32, now_ms=int(time.time() * 1000)) == "u1"
