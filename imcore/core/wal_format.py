"""The write-ahead log's record format: bytes in, records or a precise error out. Pure.

Theory of operation
-------------------

A WAL is a sequence of segment files, each named by the LSN (log sequence number) of its
first record. A segment is an 8-byte magic followed by records:

    +----------------+----------------+----------------+------------------------+
    | length: u32 LE | lsn: u64 LE    | crc: u32 LE    | payload: length bytes  |
    +----------------+----------------+----------------+------------------------+

`crc` is CRC-32 over the first 12 header bytes and the payload, so a torn write, a flipped
bit or a record from another place in the file all fail the check. LSNs count up by one
from record to record, across segments. The payload is one CBOR array whose first item
names the kind:

    [1, conv, seq, ts, from, dev, at, cmid, body, sys]   an event (spec §4, §5)
    [2, conv, user, device, seq]                         a read cursor (spec §8)
    [3, conv, user, device, seq]                         a delivered cursor (spec §8)
    [4, conv, floor]                                     retention moved the floor

where everything after `conv` in an event is the row of `records.event_to_row` (snapshots
store the same row), and `sys` is null or `[type, users, role, title, public]`. A kind
not in this table is damage, like a bad CRC: a reader never skips what it cannot read.

Kind 3 came after the first logs were written: they simply hold none of it, and read as
before. (A server older than kind 3 reads a log that holds one as damaged at that record.)
Delivered cursors got a kind of their own rather than a flag in kind 2 because the two
cursors mean different things and are applied differently (who is told, whether groups
keep one); a new kind keeps every kind-2 record, old or new, the same five items.

Kind 4 came with the history store: retention deletes from the store what falls below a
new floor, and logging the move makes that deletion replay in order after a crash.

Reading tells three outcomes apart (spec §7 and the recovery rules):

- a whole record: CRC good, LSN the one expected;
- a *torn tail*: the bytes from some offset to the end hold no valid record at all: what a
  crash in the middle of a write leaves. Recovery drops those bytes;
- *corruption*: a bad record with at least one valid record after it, or a valid record with
  the wrong LSN. Data the log acknowledged is damaged; recovery refuses to guess.

To tell the last two apart, a reader that meets a bad record looks for any valid record
further on (`_valid_record_after`). The LSN must fit before the CRC is even computed, so the
search is cheap on random bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import cbor2

from .records import (
    CursorRecord,
    DeliveredRecord,
    FloorRecord,
    Record,
    event_from_row,
    event_to_row,
)

SEGMENT_MAGIC = b"IMWAL\x00\x01\n"
HEADER = struct.Struct("<IQI")
MAX_RECORD = 64 * 1024 * 1024  # no record is near this; a larger length is damage
_EVENT, _CURSOR, _DELIVERED, _FLOOR = 1, 2, 3, 4
Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class WalRecord:
    lsn: int
    record: Record


@dataclass(frozen=True, slots=True)
class TornTail:
    """Bytes from `offset` to the end of the last segment hold no valid record."""

    offset: int
    dropped: int


@dataclass(frozen=True, slots=True)
class Corrupt:
    """A bad record at `offset` with valid data after it, or out of LSN order."""

    offset: int
    reason: str


class NeedData:
    """More bytes are needed to finish the next record."""


NEED_DATA = NeedData()


# --- encoding ----------------------------------------------------------------------------------


def record_to_wire(record: Record) -> list[Any]:
    """The CBOR array a record's payload holds (see the table above)."""
    if isinstance(record, CursorRecord):
        return [_CURSOR, record.conv, record.user, record.device, record.seq]
    if isinstance(record, DeliveredRecord):
        return [_DELIVERED, record.conv, record.user, record.device, record.seq]
    if isinstance(record, FloorRecord):
        return [_FLOOR, record.conv, record.floor]
    return [_EVENT, record.conv, *event_to_row(record)]


def record_from_wire(item: Any) -> Record:
    """Build a record from its decoded payload.

    Raises:
        ValueError: the payload is not a record of a known kind.
    """
    if not isinstance(item, list) or not item:
        raise ValueError("a record payload is a non-empty array")
    if item[0] == _CURSOR and len(item) == 5:
        return CursorRecord(item[1], item[2], item[3], item[4])
    if item[0] == _DELIVERED and len(item) == 5:
        return DeliveredRecord(item[1], item[2], item[3], item[4])
    if item[0] == _FLOOR and len(item) == 3:
        return FloorRecord(item[1], item[2])
    if item[0] == _EVENT and len(item) == 10:
        return event_from_row(item[1], item[2:])
    raise ValueError(f"unknown record kind {item[0]!r}")


def encode_record(lsn: int, record: Record) -> bytes:
    """One framed record, ready to append to a segment."""
    payload = cbor2.dumps(record_to_wire(record))
    head = struct.pack("<IQ", len(payload), lsn)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


# --- decoding ----------------------------------------------------------------------------------


def _parse_at(data: Buffer, offset: int, lsn: int) -> tuple[WalRecord, int] | None:
    """The valid record with LSN `lsn` at `offset`, and the offset after it; None if none."""
    if len(data) - offset < HEADER.size:
        return None
    length, found_lsn, crc = HEADER.unpack_from(data, offset)
    end = offset + HEADER.size + length
    if found_lsn != lsn or length > MAX_RECORD or end > len(data):
        return None
    payload = bytes(data[offset + HEADER.size : end])
    if zlib.crc32(payload, zlib.crc32(bytes(data[offset : offset + 12]))) != crc:
        return None
    try:
        record = record_from_wire(cbor2.loads(payload))
    except Exception:
        return None
    return WalRecord(found_lsn, record), end


def _valid_record_after(data: Buffer, offset: int, lsn: int) -> int | None:
    """The offset of any valid record after `offset` whose LSN could follow `lsn`."""
    top = lsn + (len(data) - offset) // HEADER.size + 1
    for at in range(offset + 1, len(data) - HEADER.size + 1):
        found_lsn = int.from_bytes(data[at + 4 : at + 12], "little")
        if lsn <= found_lsn <= top and _parse_at(data, at, found_lsn) is not None:
            return at
    return None


class RecordReader:
    """Incremental reader of one segment's bytes, fed in any pieces (h11's receive_data).

    Args:
        first_lsn: the LSN the segment's name promises for its first record.
    """

    def __init__(self, first_lsn: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._magic_checked = False
        self.next_lsn = first_lsn

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def offset(self) -> int:
        """Bytes of the segment consumed by whole records (and the magic)."""
        return self._pos

    def next(self) -> WalRecord | NeedData | Corrupt:
        """The next whole record, NEED_DATA, or Corrupt where the bytes cannot be a record.

        A bad record is reported as `Corrupt` here; whether it is a torn tail depends on what
        follows, which `scan_segment` decides once it has every byte.
        """
        buf = self._buf
        if not self._magic_checked:
            if len(buf) < len(SEGMENT_MAGIC):
                return NEED_DATA
            if buf[: len(SEGMENT_MAGIC)] != SEGMENT_MAGIC:
                return Corrupt(0, "not a WAL segment (bad magic)")
            self._magic_checked = True
            self._pos = len(SEGMENT_MAGIC)
        if len(buf) - self._pos < HEADER.size:
            return NEED_DATA
        length = int.from_bytes(buf[self._pos : self._pos + 4], "little")
        if length <= MAX_RECORD and len(buf) - self._pos < HEADER.size + length:
            return NEED_DATA
        parsed = _parse_at(buf, self._pos, self.next_lsn)
        if parsed is None:
            return Corrupt(self._pos, f"bad record where LSN {self.next_lsn} was expected")
        record, self._pos = parsed
        self.next_lsn += 1
        return record

    def buffered(self) -> int:
        """Bytes fed but not consumed by whole records."""
        return len(self._buf) - self._pos


@dataclass(frozen=True, slots=True)
class SegmentScan:
    records: list[WalRecord]
    end: int  # offset after the last whole record
    damage: TornTail | Corrupt | None


def scan_segment(data: bytes, first_lsn: int) -> SegmentScan:
    """Read every record of one segment and classify what stops the reading, if anything.

    Returns:
        The whole records, and `damage`: None for a clean end, `TornTail` when nothing valid
        follows the first bad byte (a crash mid-write), else `Corrupt`.
    """
    reader = RecordReader(first_lsn)
    reader.feed(data)
    records: list[WalRecord] = []
    while True:
        item = reader.next()
        if isinstance(item, WalRecord):
            records.append(item)
            continue
        end = reader.offset
        if isinstance(item, NeedData) and reader.buffered() == 0:
            return SegmentScan(records, end, None)
        if isinstance(item, Corrupt) and end == 0:
            return SegmentScan(records, 0, item)  # bad magic: never a tail
        if _valid_record_after(data, end, reader.next_lsn) is not None:
            reason = item.reason if isinstance(item, Corrupt) else "truncated record"
            return SegmentScan(records, end, Corrupt(end, reason + " before valid records"))
        return SegmentScan(records, end, TornTail(end, len(data) - end))
