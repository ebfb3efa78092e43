"""A real `imcore serve` process for crash tests: started, waited for, killed by its PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import trio

from imcore.server import RunningServer

from .core import SECRET

if TYPE_CHECKING:
    from pathlib import Path

BIN = os.path.dirname(sys.executable)
LISTENING = re.compile(rb"imcore listening on ws://([\d.]+):(\d+)/ws\n")


class ServerProcess:
    """One `imcore serve` subprocess on `data_dir`."""

    def __init__(self, data_dir: Path, *args: str, secret: str | None = SECRET) -> None:
        """`secret=None`: the server makes its own in `<data_dir>/secret`."""
        self.data_dir = data_dir
        self.args = (*(("--auth-secret", secret) if secret else ()), *args)
        self.process: trio.Process | None = None
        self.stderr = b""

    async def start(self) -> RunningServer:
        """Start the server and wait for its listening line."""
        command = [
            os.path.join(BIN, "imcore"),
            "serve",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        self.process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while not line.endswith(b"\n"):
                chunk = await self.process.stdout.receive_some(1)
                if not chunk:
                    raise RuntimeError(f"server exited: {await self.exit()}")
                line += chunk
        match = LISTENING.fullmatch(line)
        assert match, line
        return RunningServer(match.group(1).decode(), int(match.group(2)))

    async def exit(self) -> tuple[int, str]:
        """Wait for the process to end; its exit code and stderr."""
        assert self.process is not None
        assert self.process.stderr is not None
        chunks = []
        while chunk := await self.process.stderr.receive_some(65536):
            chunks.append(chunk)
        code = await self.process.wait()
        return code, b"".join(chunks).decode()

    def kill(self) -> None:
        """SIGKILL: no shutdown path runs, as in a crash."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)

    def terminate(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGTERM)

    async def aclose(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.kill()
            await self.process.wait()


async def run_admin(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [os.path.join(BIN, "imcore-admin"), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def run_serve_once(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `imcore serve` expecting it to refuse to start."""
    command = [os.path.join(BIN, "imcore"), "serve", "--port", "0", "--admin-port", "0"]
    command += ["--data-dir", str(data_dir)]
    with trio.fail_after(20):
        return await trio.run_process(
            [*command, "--auth-secret", SECRET, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
