from __future__ import annotations

import struct
import zlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcore.core.frames import Event, SysChange
from imcore.core.records import CursorRecord, DeliveredRecord, Record
from imcore.core.wal_format import (
    NEED_DATA,
    SEGMENT_MAGIC,
    Corrupt,
    RecordReader,
    TornTail,
    WalRecord,
    encode_record,
    record_from_wire,
    record_to_wire,
    scan_segment,
)

RECORDS: list[Record] = [
    Event(conv="dm:a:b", seq=1, ts=1, sender="a", dev="d", at=5, cmid="c1", body={"t": "hi"}),
    Event(conv="dm:a:b", seq=2, ts=2, sender="b", dev="d", at=6, cmid="c2", body=None),
    Event(
        conv="g:x",
        seq=1,
        ts=3,
        sender="a",
        dev="d",
        at=7,
        sys=SysChange(type="create", users=("a", "b"), title="T", public=True),
    ),
    CursorRecord("dm:a:b", "b", "phone", 2),
    DeliveredRecord("dm:a:b", "b", "phone", 2),
    Event(conv="g:x", seq=2, ts=4, sender="a", dev="d", at=8, cmid="c", body=[1, 2.5, "x" * 300]),
]


def segment(records: list[Record] = RECORDS, first_lsn: int = 7) -> bytes:
    return SEGMENT_MAGIC + b"".join(encode_record(first_lsn + i, r) for i, r in enumerate(records))


def test_records_round_trip() -> None:
    scan = scan_segment(segment(), 7)
    assert scan.damage is None
    assert scan.records == [WalRecord(7 + i, r) for i, r in enumerate(RECORDS)]


def test_every_valid_log_parses_identically_when_fed_one_byte_at_a_time() -> None:
    data = segment()
    reader = RecordReader(7)
    got = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        while isinstance(item := reader.next(), WalRecord):
            got.append(item)
        assert item is NEED_DATA
    assert got == scan_segment(data, 7).records


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_cut_at_any_byte_recovers_exactly_the_whole_records_before_it(
    data: st.DataObject,
) -> None:
    full = segment()
    ends = [len(SEGMENT_MAGIC)]
    for i, r in enumerate(RECORDS):
        ends.append(ends[-1] + len(encode_record(7 + i, r)))
    cut = data.draw(st.integers(0, len(full)))
    scan = scan_segment(full[:cut], 7)
    whole = sum(1 for end in ends[1:] if end <= cut)
    assert scan.records == [WalRecord(7 + i, r) for i, r in enumerate(RECORDS[:whole])]
    if cut == 0 or cut in ends:
        assert scan.damage is None
    else:
        assert isinstance(scan.damage, TornTail)
        assert scan.damage.offset + scan.damage.dropped == cut


def test_tail_truncation_at_every_byte_of_the_last_record() -> None:
    full = segment()
    last = len(encode_record(7 + len(RECORDS) - 1, RECORDS[-1]))
    for cut in range(len(full) - last, len(full)):
        scan = scan_segment(full[:cut], 7)
        assert [r.record for r in scan.records] == RECORDS[:-1]
        expected = (
            None if cut == len(full) - last else TornTail(len(full) - last, cut - len(full) + last)
        )
        assert scan.damage == expected


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_flipped_bit_is_never_a_wrong_record(data: st.DataObject) -> None:
    full = bytearray(segment())
    bit = data.draw(st.integers(0, len(full) * 8 - 1))
    full[bit // 8] ^= 1 << (bit % 8)
    scan = scan_segment(bytes(full), 7)
    good = [WalRecord(7 + i, r) for i, r in enumerate(RECORDS)]
    assert scan.records == good[: len(scan.records)]
    assert scan.damage is not None
    last_start = len(full) - len(encode_record(7 + len(RECORDS) - 1, RECORDS[-1]))
    if bit // 8 < last_start:
        # damage before the last record is never mistaken for a torn tail
        assert isinstance(scan.damage, Corrupt)


def test_a_record_with_the_wrong_lsn_is_corrupt() -> None:
    data = SEGMENT_MAGIC + encode_record(1, RECORDS[0]) + encode_record(3, RECORDS[1])
    scan = scan_segment(data + encode_record(4, RECORDS[2]), 1)
    assert len(scan.records) == 1
    assert isinstance(scan.damage, Corrupt)


def test_read_and_delivered_cursors_are_kinds_2_and_3() -> None:
    assert record_to_wire(CursorRecord("dm:a:b", "b", "p", 2)) == [2, "dm:a:b", "b", "p", 2]
    assert record_to_wire(DeliveredRecord("dm:a:b", "b", "p", 2)) == [3, "dm:a:b", "b", "p", 2]


@pytest.mark.parametrize(
    "payload",
    [[4, "dm:a:b", "b", "p", 2], [0], [3, "dm:a:b", "b", "p"], [3, "dm:a:b", "b", "p", 2, 0], []],
)
def test_an_unknown_kind_or_shape_is_damage_never_skipped(payload: list[object]) -> None:
    with pytest.raises(ValueError, match="record"):
        record_from_wire(payload)
    # framed with a good CRC and LSN, it still stops the reading, before valid records
    body = cbor2.dumps(payload)
    head = struct.pack("<IQ", len(body), 8)
    bad = head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body
    data = SEGMENT_MAGIC + encode_record(7, RECORDS[0]) + bad + encode_record(9, RECORDS[1])
    scan = scan_segment(data, 7)
    assert [r.lsn for r in scan.records] == [7]
    assert isinstance(scan.damage, Corrupt)
