"""Every close the server decides follows one rule (docs/protocol.md, "Closing"): at the
decision the connection leaves presence and the fan-out; the close frame follows what was
already queued for it, and a client that reads again finds both."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import pytest
import trio

from tests.helpers.client import open_client

from .test_admin import call

if TYPE_CHECKING:
    from imcore.server import RunningServer

DM = "dm:alice:bob"
MAX_FRAME = 10_000
ABUSE_ERRORS = 5
#: A bound with a reason: the decision takes alice out of presence at once, while she reads
#: nothing; before, she stayed online until her connection ended (at the 10 s deadline).
OFFLINE_WITHIN_S = 3.0


@pytest.fixture
def strict(settings: dict[str, object]) -> dict[str, object]:
    settings.update(max_frame=MAX_FRAME, abuse_errors=ABUSE_ERRORS, close_timeout_ms=60_000)
    return settings


@pytest.mark.parametrize(("cause", "code"), [("kicked", 4003), ("too_big", 1009), ("abuse", 4002)])
async def test_a_close_takes_the_client_out_at_once_and_comes_after_its_frames(
    strict: object, server: RunningServer, cause: str, code: int
) -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            carol = await stack.enter_async_context(open_client(server, "carol"))
            await carol.send_frame(op="watch", users=["alice"])
            assert (await carol.next_push("presence"))["online"] is False
            alice = await stack.enter_async_context(open_client(server, "alice", recv=False))
            bob = await stack.enter_async_context(open_client(server, "bob"))
            assert (await carol.next_push("presence"))["online"] is True
            # alice takes nothing from now on; her client stops reading once one message
            # waits for her (its queue holds one), so what follows stays on the way to her
            for i in (1, 2):
                await bob.request(op="send", conv=DM, cmid=f"m{i}", body=i)

            if cause == "kicked":
                assert await call(server, "POST", "/kick/alice") == (200, {"kicked": 1})
            elif cause == "too_big":
                await alice.send_frame(op="send", conv=DM, cmid="big", body="x" * MAX_FRAME)
            else:
                for _ in range(ABUSE_ERRORS + 1):
                    await alice.send_frame(op="nonsense")

            with trio.fail_after(OFFLINE_WITHIN_S):
                offline = await carol.next_push("presence")
            assert (offline["user"], offline["online"]) == ("alice", False)
            status, conns = await call(server, "GET", "/conns")
            assert status == 200
            (closing,) = [c for c in conns["conns"] if c["user"] == "alice"]
            assert (closing["state"], closing["conversations"]) == ("closing", 0)  # no table
            await bob.request(op="send", conv=DM, cmid="m3", body=3)  # after the decision

            assert await alice.closed_with() == code
            bodies = [p["body"] for p in alice.pending_pushes() if p["op"] == "msg"]
            assert bodies == [1, 2]  # what was queued before the close; nothing after it
