"""The snapshot file format: the whole committed state as of an LSN. Pure.

    magic (8) | body | body length: u64 LE | CRC-32 of body: u32 LE

The body is one CBOR array of indefinite length, written in pieces so a large state is
encoded a conversation at a time:

    [ {"v": 2, "lsn": L, "clock": C},
      [conv, head, ts_last, roster | null, {user: read seq}, {user: delivered seq},
       [event, ...]],                                                 one per conversation
      ... ]

with `roster` = [owner, title, public, [[user, role], ...]] and each event the row of
`records.event_to_row`, [seq, ts, from, dev, at, cmid, body, sys] (its conversation is the
enclosing one), the same row the WAL stores after the conversation.

A snapshot may be *fuzzy*: conversations captured one at a time while the server keeps
committing, so one may already hold events after L. That is safe because replaying the log
from L + 1 is idempotent: an event whose seq is not above its conversation's head is
skipped, and cursors only move forward.

Version 1 had no delivered cursors (its conversation items have six fields, without
`{user: delivered seq}`); it is still read, as a state whose delivered cursors are all 0.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cbor2

from .conversation import ConversationState
from .records import event_from_row, event_to_row

if TYPE_CHECKING:
    from collections.abc import Iterator

MAGIC = b"IMSNAP\x00\x01"
TRAILER = struct.Struct("<QI")
VERSION = 2
_DECODES = (1, 2)  # the versions `decode` reads


class SnapshotError(ValueError):
    """The bytes are not a whole, valid snapshot."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    lsn: int
    clock: int
    conversations: list[ConversationState]


class SnapshotEncoder:
    """Encodes a snapshot in pieces: concatenate `begin()`, the pieces of each
    `conversation()` and `end()`."""

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

    def conversation(self, state: ConversationState, chunk: int = 1000) -> Iterator[bytes]:
        """The conversation's item in pieces of at most `chunk` events, so a caller can
        yield to other work between pieces however long the conversation is."""
        roster = None
        if state.roster is not None:
            owner, title, public, roles = state.roster
            roster = [owner, title, public, [list(r) for r in roles]]
        fields = [state.conv, state.head, state.ts_last, roster, state.reads, state.delivered]
        head = _array_header(7) + b"".join(cbor2.dumps(f) for f in fields)
        events = state.events
        yield self._body(head + _array_header(len(events)))
        for start in range(0, len(events), chunk):
            piece = b"".join(cbor2.dumps(event_to_row(e)) for e in events[start : start + chunk])
            yield self._body(piece)

    def end(self) -> bytes:
        tail = self._body(b"\xff")
        return tail + TRAILER.pack(self._length, self._crc)


def _array_header(n: int) -> bytes:
    """The CBOR head of a definite-length array of `n` items (major type 4)."""
    if n < 24:
        return bytes([0x80 + n])
    if n < 1 << 8:
        return bytes([0x98, n])
    if n < 1 << 16:
        return b"\x99" + n.to_bytes(2, "big")
    if n < 1 << 32:
        return b"\x9a" + n.to_bytes(4, "big")
    return b"\x9b" + n.to_bytes(8, "big")


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
        states = []
        for item in convs:
            if version == 1:
                conv, head, ts_last, roster, reads, events = item
                delivered = {}
            else:
                conv, head, ts_last, roster, reads, delivered, events = item
            roster_state = None
            if roster is not None:
                owner, title, public, roles = roster
                roster_state = (owner, title, public, tuple((u, r) for u, r in roles))
            states.append(
                ConversationState(
                    conv,
                    head,
                    ts_last,
                    roster_state,
                    dict(reads),
                    dict(delivered),
                    tuple(event_from_row(conv, e) for e in events),
                )
            )
        return Snapshot(header["lsn"], header["clock"], states)
    except SnapshotError:
        raise
    except Exception as exc:
        raise SnapshotError(f"snapshot structure is damaged: {exc}") from None
