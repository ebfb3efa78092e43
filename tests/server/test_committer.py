"""The commit seam: replies and pushes wait for the commit; a failed log means `unavailable`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from imcore.core import Chat, Codec, Encoding, Limits, Session
from imcore.core.frames import Ack, Error, Send, Sync
from imcore.server.committer import Committer
from imcore.server.fanout import Fanout

if TYPE_CHECKING:
    from imcore.core import Record, ServerFrame

DM = "dm:alice:bob"


class FakeConnection:
    def __init__(self, chat: Chat) -> None:
        self.sent: list[ServerFrame | None] = []
        codec = Codec(Encoding.JSON, chat.limits)
        self.session = Session(chat, codec, secret="s" * 32, session_id="s", now_ms=0)

    def send(self, frame: ServerFrame | None) -> None:
        self.sent.append(frame)


class GateLog:
    """Commits only when the test opens the gate; fails when told to."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.fail = False
        self.batches: list[list[Record]] = []

    async def commit(self, records: list[Record]) -> None:
        await self.gate.wait()
        if self.fail:
            raise OSError(28, "No space left on device")
        self.batches.append(records)


def setup() -> tuple[Chat, GateLog, Committer]:
    chat = Chat(Limits())
    log = GateLog()
    fanout = Fanout([Codec(e, chat.limits) for e in Encoding], shards=1, now_ms=lambda: 0)
    return chat, log, Committer(chat, fanout, log)


def send(chat: Chat, cmid: str) -> Any:
    return chat.submit("alice", "d", Send(conv=DM, cmid=cmid, body=1, id=cmid), 0)


async def test_sends_queued_during_a_commit_share_the_next_one(nursery: trio.Nursery) -> None:
    chat, log, committer = setup()
    await nursery.start(committer.run)
    conn = FakeConnection(chat)
    committer.submit_nowait(send(chat, "a"), conn)  # type: ignore[arg-type]
    await trio.testing.wait_all_tasks_blocked()
    for cmid in "bcd":
        committer.submit_nowait(send(chat, cmid), conn)  # type: ignore[arg-type]
    assert conn.sent == []  # nothing is acked before its commit
    log.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert [len(b) for b in log.batches] == [1, 3]
    assert [f.seq for f in conn.sent if isinstance(f, Ack)] == [1, 2, 3, 4]


async def test_a_failed_commit_answers_unavailable_and_keeps_reads(nursery: trio.Nursery) -> None:
    chat, log, committer = setup()
    await nursery.start(committer.run)
    conn = FakeConnection(chat)
    log.gate.set()
    committer.submit_nowait(send(chat, "ok"), conn)  # type: ignore[arg-type]
    await trio.testing.wait_all_tasks_blocked()
    log.fail = True
    committer.submit_nowait(send(chat, "lost"), conn)  # type: ignore[arg-type]
    await trio.testing.wait_all_tasks_blocked()
    ack, refusal = conn.sent
    assert isinstance(ack, Ack)
    assert isinstance(refusal, Error)
    assert (refusal.code, refusal.id) == ("unavailable", "lost")
    assert chat.read_only
    assert [e.cmid for e in chat.sync("bob", Sync(conv=DM)).msgs] == ["ok"]
