"""The snapshot file format: the live state as of an LSN. Pure.

    magic (8) | body | body length: u64 LE | CRC-32 of body: u32 LE

The body is one CBOR array of indefinite length, written in pieces so a large state is
encoded a conversation at a time:

    [ {"v": 3, "lsn": L, "clock": C},
      [conv, head, ts_last, floor, roster | null, {user: read seq}, {user: delivered seq},
       sys seqs, {sender: message seqs}],                             one per conversation
      ...,
      {"filter": [[capacity, keys, bits], ...]} ]                     the cmid filter

with `roster` = [owner, title, public, [[user, role], ...]], the seqs as byte strings of
little-endian u32 (`conversation.seq_bytes`), and the filter as `dedup.CmidFilter` states
it. Events are not in a snapshot: they are in the history store.

A snapshot may be *fuzzy*: conversations captured one at a time while the server keeps
committing, so one may already hold events after L. That is safe because replaying the log
from L + 1 is idempotent: an event whose seq is not above its conversation's head is
skipped (its cmid still goes into the filter), and cursors only move forward. The filter is
captured after the conversations, so it holds at least their cmids.

Older versions still decode, for the upgrade of a data directory (`datadir`): they held
every retained event, as the row of `records.event_to_row` after the other fields:

    version 2: [conv, head, ts_last, roster, {user: read}, {user: delivered}, [event, ...]]
    version 1: [conv, head, ts_last, roster, {user: read}, [event, ...]]

and decode to states with `events` and no filter (the caller rebuilds it from the events).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cbor2

from .conversation import ConversationState
from .records import event_from_row

if TYPE_CHECKING:
    from .dedup import FilterState
    from .frames import Event

MAGIC = b"IMSNAP\x00\x01"
TRAILER = struct.Struct("<QI")
VERSION = 3
_DECODES = (1, 2, 3)  # the versions `decode` reads


class SnapshotError(ValueError):
    """The bytes are not a whole, valid snapshot."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    lsn: int
    clock: int
    conversations: list[ConversationState]
    filter: FilterState | None = None  # None in versions 1 and 2
    version: int = VERSION


class SnapshotEncoder:
    """Encodes a snapshot in pieces: concatenate `begin()`, each `conversation()`,
    `filter()` and `end()`."""

    def __init__(self, lsn: int, clock: int) -> None:
        self.lsn, self.clock = lsn, clock
        self._crc = 0
        self._length = 0

    def _body(self, piece: bytes) -> bytes:
        self._crc = zlib.crc32(piece, self._crc)
        self._length += len(piece)
        return piece

    def begin(self) -> bytes:
        header = cbor2.dumps({"v": VERSION, "lsn": self.lsn, "clock": self.clock})
        return MAGIC + self._body(b"\x9f" + header)

    def conversation(self, state: ConversationState) -> bytes:
        """The conversation's item."""
        roster = None
        if state.roster is not None:
            owner, title, public, roles = state.roster
            roster = [owner, title, public, [list(r) for r in roles]]
        item = [
            state.conv,
            state.head,
            state.ts_last,
            state.floor,
            roster,
            state.reads,
            state.delivered,
            state.sys_seqs,
            state.sent_by or {},
        ]
        return self._body(cbor2.dumps(item))

    def filter(self, state: FilterState) -> bytes:
        """The cmid filter's item (after every conversation)."""
        return self._body(cbor2.dumps({"filter": state}))

    def end(self) -> bytes:
        tail = self._body(b"\xff")
        return tail + TRAILER.pack(self._length, self._crc)


def decode(data: bytes) -> Snapshot:
    """Check and decode a snapshot file.

    Raises:
        SnapshotError: bad magic, a length or CRC that does not match, or a bad structure.
    """
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + TRAILER.size:
        raise SnapshotError("not a snapshot (bad magic or too short)")
    body = memoryview(data)[len(MAGIC) : len(data) - TRAILER.size]
    length, crc = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    if length != len(body) or zlib.crc32(body) != crc:
        raise SnapshotError("snapshot checksum mismatch (incomplete or damaged)")
    try:
        items = cbor2.loads(body)
        header, *convs = items
        version = header.get("v")
        if version not in _DECODES:
            raise SnapshotError(f"unknown snapshot version {version!r}")
        found_filter = None
        if version >= 3:
            *convs, last = convs
            found_filter = last["filter"]
        states = [_conversation(version, item) for item in convs]
        return Snapshot(header["lsn"], header["clock"], states, found_filter, version)
    except SnapshotError:
        raise
    except Exception as exc:
        raise SnapshotError(f"snapshot structure is damaged: {exc}") from None


def _conversation(version: int, item: list[Any]) -> ConversationState:
    events: tuple[Event, ...] = ()
    sys_seqs, sent_by = b"", None
    if version == 1:
        conv, head, ts_last, roster, reads, rows = item
        delivered: dict[str, int] = {}
    elif version == 2:
        conv, head, ts_last, roster, reads, delivered, rows = item
    else:
        conv, head, ts_last, floor, roster, reads, delivered, sys_seqs, sent_by = item
        rows = ()
    roster_state = None
    if roster is not None:
        owner, title, public, roles = roster
        roster_state = (owner, title, public, tuple((u, r) for u, r in roles))
    if version < 3:
        events = tuple(event_from_row(conv, e) for e in rows)
        floor = events[0].seq if events else head + 1
    if not isinstance(sys_seqs, bytes) or not all(
        isinstance(v, bytes) for v in (sent_by or {}).values()
    ):
        raise SnapshotError(f"{conv}: seqs must be byte strings")
    return ConversationState(
        conv,
        head,
        ts_last,
        floor,
        roster_state,
        dict(reads),
        dict(delivered),
        sys_seqs,
        dict(sent_by or {}),
        events,
    )
