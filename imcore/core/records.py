"""What the log holds: committed events and cursor moves, and the one row form of an event
that the log and snapshots both store. Pure data.

Both cursors are committed so that no position a client was shown ever goes back, across
reconnects and restarts alike (spec §8): read cursors of every conversation, and delivered
cursors of direct conversations (groups keep none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .frames import Event, SysChange


@dataclass(frozen=True, slots=True)
class CursorRecord:
    """A read cursor moved forward: committed like an event, so it survives restarts."""

    conv: str
    user: str
    device: str
    seq: int


@dataclass(frozen=True, slots=True)
class DeliveredRecord:
    """A direct conversation's delivered cursor moved forward (a `recv` from `device`):
    committed before the peer is told, so a `delivered` tick never goes back."""

    conv: str
    user: str
    device: str
    seq: int


@dataclass(frozen=True, slots=True)
class FloorRecord:
    """Retention moved the floor of `conv` up to `floor`: the events below it are gone
    (from memory when applied, from the store when the checkpoint reaches it)."""

    conv: str
    floor: int


Record = Event | CursorRecord | DeliveredRecord | FloorRecord


def event_to_row(event: Event) -> list[Any]:
    """An event as stored: `[seq, ts, from, dev, at, cmid, body, sys]`, without its
    conversation (the WAL writes it before the row, a snapshot around the rows), and `sys`
    null or `[type, users, role, title, public]`."""
    sys = None if event.sys is None else event.sys.to_row()
    return [event.seq, event.ts, event.sender, event.dev, event.at, event.cmid, event.body, sys]


def event_from_row(conv: str, row: list[Any]) -> Event:
    """The event `row` (as `event_to_row` wrote it) of conversation `conv`.

    Raises:
        ValueError, TypeError: the row does not have the stored shape.
    """
    seq, ts, sender, dev, at, cmid, body, sys = row
    change = None if sys is None else SysChange.from_row(sys)
    return Event(
        conv=conv, seq=seq, ts=ts, sender=sender, dev=dev, at=at, cmid=cmid, body=body, sys=change
    )
