"""The admin port and `imcore-admin inspect` on history that lives on disk: the
conversation views read old events from the store."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import pytest
import trio

from imcore.core.history import EVENT_OVERHEAD
from tests.helpers.client import open_client

from .test_admin import call

if TYPE_CHECKING:
    from imcore.server import RunningServer
    from tests.helpers.client import Client

BIN = os.path.dirname(sys.executable)
DM = "dm:alice:bob"
#: A hot tail of about a dozen of these tests' events (EVENT_OVERHEAD + 3-byte bodies).
SMALL_TAIL = 12 * (EVENT_OVERHEAD + 3)


@pytest.fixture
def settings(settings: dict[str, object]) -> dict[str, object]:
    """The `server` fixture's settings, with a hot tail that holds few events."""
    return {**settings, "hot_tail_bytes": SMALL_TAIL}


def text(i: int) -> str:
    return f"b{i:02d}"


async def send(alice: Client, start: int, count: int) -> None:
    for i in range(start, start + count):
        ack = await alice.request(op="send", conv=DM, cmid=f"m{i}", body=text(i))
        assert ack["seq"] == i + 1, ack


async def test_the_conversation_views_read_old_events_from_the_store(
    server: RunningServer, settings: dict[str, object]
) -> None:
    data_dir = str(settings["data_dir"])
    with trio.fail_after(60):
        async with open_client(server, "alice", recv=False) as alice:
            await send(alice, 0, 50)
            assert (await call(server, "POST", "/snapshot"))[1]["lsn"] == 50
            await send(alice, 50, 10)
            assert (await call(server, "POST", "/snapshot"))[1]["lsn"] == 60  # log 1..50 goes
            await send(alice, 60, 5)

            _, view = await call(server, "GET", f"/conversations/{DM}?last=20")
            assert [e["seq"] for e in view["last_events"]] == list(range(46, 66))
            assert [e["body"] for e in view["last_events"]] == [text(i) for i in range(45, 65)]
            assert (await call(server, "GET", f"/conversations/{DM}?last=0"))[1][
                "last_events"
            ] == []

            # Offline, beside the running server: events 46..50 are in the store alone.
            inspect = [os.path.join(BIN, "imcore-admin"), "inspect", "--data-dir", data_dir]
            shown = await trio.run_process(
                [*inspect, "--conv", DM, "--last", "20", "--json"], capture_stdout=True
            )
            offline = json.loads(shown.stdout)
            assert offline["last_events"] == view["last_events"]
