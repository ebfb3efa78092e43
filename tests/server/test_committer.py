"""The commit seam: replies and pushes wait for the commit; a failed log means `unavailable`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from imcore.core import Chat, Limits
from imcore.core.frames import Ack, Error, Send, Sync
from imcore.server.committer import Committer
from imcore.server.metrics import Metrics
from tests.helpers.core import sync_page

if TYPE_CHECKING:
    from imcore.core import Deliveries, Record, ServerFrame

DM = "dm:alice:bob"


class GateLog:
    """Commits only when the test opens the gate; fails when told to."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.fail = False
        self.batches: list[list[Record]] = []

    async def commit(self, records: list[Record]) -> int:
        await self.gate.wait()
        if self.fail:
            raise OSError(28, "No space left on device")
        self.batches.append(records)
        return sum(map(len, self.batches)) - len(records) + 1


def setup() -> tuple[Chat, GateLog, Committer, list[Deliveries]]:
    chat = Chat(Limits())
    log = GateLog()
    published: list[Deliveries] = []
    return chat, log, Committer(chat, published.append, log, Metrics()), published


def send(chat: Chat, cmid: str) -> Any:
    return chat.submit("alice", "d", Send(conv=DM, cmid=cmid, body=1, id=cmid), 0)


async def test_sends_queued_during_a_commit_share_the_next_one(nursery: trio.Nursery) -> None:
    chat, log, committer, published = setup()
    await nursery.start(committer.run)
    sent: list[ServerFrame | None] = []
    committer.submit_nowait(send(chat, "a"), sent.append)
    await trio.testing.wait_all_tasks_blocked()
    for cmid in "bcd":
        committer.submit_nowait(send(chat, cmid), sent.append)
    assert (sent, published) == ([], [])  # nothing is acked or pushed before its commit
    log.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert [len(b) for b in log.batches] == [1, 3]
    assert [f.seq for f in sent if isinstance(f, Ack)] == [1, 2, 3, 4]
    assert [d.frame for d in published] == [r for b in log.batches for r in b]


async def test_a_failed_commit_answers_unavailable_and_keeps_reads(nursery: trio.Nursery) -> None:
    chat, log, committer, published = setup()
    await nursery.start(committer.run)
    sent: list[ServerFrame | None] = []
    log.gate.set()
    committer.submit_nowait(send(chat, "ok"), sent.append)
    await trio.testing.wait_all_tasks_blocked()
    log.fail = True
    committer.submit_nowait(send(chat, "lost"), sent.append)
    await trio.testing.wait_all_tasks_blocked()
    assert len(published) == 1  # the failed write pushed nothing
    ack, refusal = sent
    assert isinstance(ack, Ack)
    assert isinstance(refusal, Error)
    assert (refusal.code, refusal.id) == ("unavailable", "lost")
    assert chat.read_only
    assert [e.cmid for e in sync_page(chat, "bob", Sync(conv=DM)).msgs] == ["ok"]
