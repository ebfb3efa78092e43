"""The admin API's views: plain data in, JSON-ready dicts out. Pure: imports the core only.

The HTTP layer (server/admin_http.py) gathers the server's figures into `ServerFigures`
and `HistoryFigures` and routes requests here; the offline `imcore-admin inspect` builds
the same views from a data directory. A view that shows old history takes the events as
an argument: `last_events` says which, or which part the caller must read from the store
first (the core's `ReadPage`), as a session's `sync` does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .core import ids

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .core import Chat, Event
    from .core.history import Fetched, ReadPage


@dataclass(frozen=True, slots=True)
class ServerFigures:
    """What only the running server knows (everything else comes from the Chat)."""

    version: str
    uptime_s: float
    connections: int
    fsync: str
    wal_lsn: int
    wal_bytes: int
    last_snapshot_lsn: int
    last_snapshot_s: float
    fsync_ms: dict[str, float]  # p50/p99/max of recent commit writes
    sends_per_s: float
    deliveries_per_s: float
    loop_lag_ms: float
    read_only: bool


@dataclass(frozen=True, slots=True)
class HistoryFigures:
    """Where history is: the store on disk and the hot tails in memory (`/status` and
    `/metrics`)."""

    store_bytes: int = 0  # the store's files: database, SQLite's WAL and shared memory
    store_lsn: int = 0  # the last log record the store holds
    checkpoint_lag: int = 0  # committed records the store does not hold yet
    hot_tail_bytes: int = 0  # the tails' size, by the budget's measure
    hot_tail_events: int = 0
    hot_tail_hits: int = 0  # pages (syncs, resends) served from memory alone
    hot_tail_misses: int = 0  # pages that needed the store

    @property
    def hot_tail_hit_rate(self) -> float | None:
        """Hits over all pages served since the start; None before the first."""
        pages = self.hot_tail_hits + self.hot_tail_misses
        return round(self.hot_tail_hits / pages, 4) if pages else None


def history_figures(
    chat: Chat, *, store_bytes: int, store_lsn: int, checkpoint_lag: int
) -> HistoryFigures:
    """The store's figures (the server's) with the hot tails' (the core's)."""
    tail = chat.tail
    return HistoryFigures(
        store_bytes=store_bytes,
        store_lsn=store_lsn,
        checkpoint_lag=checkpoint_lag,
        hot_tail_bytes=tail.bytes,
        hot_tail_events=tail.events,
        hot_tail_hits=tail.hits,
        hot_tail_misses=tail.misses,
    )


def status(chat: Chat, figures: ServerFigures, history: HistoryFigures) -> dict[str, Any]:
    """GET /status: what the server is doing right now."""
    conversations, events = chat.retained()
    return {
        **asdict(figures),
        "users_online": chat.presence.online_count(),
        "conversations": conversations,
        "events": events,
        "clock": chat.clock.value,
        **asdict(history),
        "hot_tail_hit_rate": history.hot_tail_hit_rate,
    }


def user(chat: Chat, user_id: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    """GET /users/{id}: live devices, presence, and the user's conversations with cursors."""
    presence = chat.presence.state(user_id)
    return {
        "user": user_id,
        "online": presence.online,
        "last_seen": presence.last_seen,
        "devices": devices,
        "convs": [s.to_wire() for s in chat.summaries(user_id)],
    }


def last_events(
    chat: Chat, conv: str, last: int, stored: Fetched | None = None
) -> list[Event] | ReadPage:
    """The newest `last` retained events of `conv`, or the query for the part of them only
    the store has; call again with its answer as `stored`."""
    return chat.events_from(conv, max(chat.head(conv) - last + 1, 1), stored)


def conversation(chat: Chat, conv: str, events: Sequence[Event]) -> dict[str, Any] | None:
    """GET /conversations/{id}: members with their cursors (`delivered` in a direct
    conversation only: groups keep none), head, floor and the last events (`events`, from
    `last_events`); None if unknown."""
    if chat.head(conv) == 0:
        return None
    cursors, direct = chat.cursors, not ids.is_group(conv)
    members = []
    for u, role in sorted(chat.roles(conv).items()):
        member: dict[str, Any] = {"user": u, "role": role, "read": cursors.read(conv, u)}
        if direct:
            member["delivered"] = cursors.delivered(conv, u)
        members.append(member)
    return {
        "conv": conv,
        "head": chat.head(conv),
        "floor": chat.floor(conv),
        "members": members,
        "last_events": [e.to_wire(op=False) for e in events],
    }
