"""What the log holds: committed events and read-cursor moves. Pure data."""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Event


@dataclass(frozen=True, slots=True)
class CursorRecord:
    """A read cursor moved forward: committed like an event, so it survives restarts."""

    conv: str
    user: str
    device: str
    seq: int


Record = Event | CursorRecord
