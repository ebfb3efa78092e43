"""The admin API's views: plain data in, JSON-ready dicts out. Pure: imports the core only.

The HTTP layer (server/admin_http.py) gathers the server's figures into `ServerFigures`
and routes requests here; the offline `imcore-admin inspect` builds the same views from a
data directory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .core import ids

if TYPE_CHECKING:
    from .core import Chat


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


def status(chat: Chat, figures: ServerFigures) -> dict[str, Any]:
    """GET /status: what the server is doing right now."""
    conversations, events = chat.retained()
    return {
        **asdict(figures),
        "users_online": chat.presence.online_count(),
        "conversations": conversations,
        "events": events,
        "clock": chat.clock.value,
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


def conversation(chat: Chat, conv: str, last: int = 20) -> dict[str, Any] | None:
    """GET /conversations/{id}: members with their cursors (`delivered` in a direct
    conversation only: groups keep none), head, floor and the last events; None if unknown."""
    if chat.head(conv) == 0:
        return None
    events = chat.events(conv)[-last:]
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
