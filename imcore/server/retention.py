"""Retention: moving floors as `retain_messages` and `retain_days` say (0: keep all).

Every `interval_s` the core names the floor moves `retain_messages` calls for, and the
store is scanned (in a worker thread) for each conversation's first event younger than
`retain_days`. Each move is committed as a `FloorRecord`, like any write: applying it moves
the floor in memory at once, and the checkpoint deletes the events below it from the store
when it reaches the record, so a crash replays the deletion in order. Retention by age goes
by `at`, the server's wall clock when the event was committed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..core import Outcome
from ..core.records import FloorRecord
from .files import run_blocking

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core import Chat
    from .committer import Committer
    from .files import Files
    from .store import HistoryStore

log = logging.getLogger("imcore.retention")

DAY_MS = 86_400_000


def aged_floors(
    store: HistoryStore, floors: list[tuple[str, int]], cutoff_ms: int
) -> list[FloorRecord]:
    """The floor moves that drop every event older than `cutoff_ms` (a worker thread):
    per conversation, a scan from its floor to its first younger event."""
    moves = []
    for conv, floor in floors:
        first = None
        for event in store.scan(conv, floor):
            if event.at >= cutoff_ms:
                first = event.seq
                break
            first = event.seq + 1
        if first is not None and first > floor:
            moves.append(FloorRecord(conv, first))
    return moves


class Retention:
    """Commits floor moves from time to time.

    Args:
        chat: the core (its limits say what to keep).
        store: where old events are found by age.
        committer: commits the moves.
        files: the file layer (whether blocking calls go to a thread).
        interval_s: how often to look.
        now_ms: wall-clock ms.
    """

    def __init__(
        self,
        chat: Chat,
        store: HistoryStore,
        committer: Committer,
        files: Files,
        interval_s: float,
        now_ms: Callable[[], int],
    ) -> None:
        self.chat = chat
        self.store = store
        self.committer = committer
        self.files = files
        self.interval_s = interval_s
        self.now_ms = now_ms

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval_s)
            if not self.chat.read_only:
                await self.sweep(self.now_ms())

    async def sweep(self, now_ms: int) -> list[FloorRecord]:
        """Commit the floor moves due at `now_ms`. Returns them."""
        limits = self.chat.limits
        moves = {m.conv: m for m in self.chat.retention_due()}
        if limits.retain_days:
            cutoff = now_ms - limits.retain_days * DAY_MS
            aged = await run_blocking(
                self.files, aged_floors, self.store, self.chat.floors(), cutoff
            )
            for move in aged:
                if move.conv not in moves or move.floor > moves[move.conv].floor:
                    moves[move.conv] = move
        for move in moves.values():
            self.committer.submit_nowait(Outcome(None, move), lambda _: None)
        if moves:
            fields = {"conversations": len(moves)}
            log.info("retention moved floors", extra={"fields": fields})
        return list(moves.values())
