"""Rebuild the state from a snapshot and the log after it. Pure: bytes in, a Chat out.

spec §7: after any crash, every committed event is back with the same seq, ts and body, and
the clock never goes back. A torn tail at the end of the last segment is what a crash leaves
and is dropped; damage anywhere else stops recovery at the damage (`RecoveryReport.corrupt`),
and the caller decides whether to refuse to start or to repair by truncating there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .chat import Chat
from .dedup import CmidFilter
from .wal_format import Corrupt, TornTail, WalRecord, scan_segment

if TYPE_CHECKING:
    from .limits import Limits
    from .snapshot import Snapshot


@dataclass(slots=True)
class RecoveryReport:
    snapshot_lsn: int = 0
    last_lsn: int = 0  # the last record kept, from the snapshot or the log
    replayed: int = 0  # records applied from the log
    segments: int = 0
    #: (segment's first LSN, damage): a torn tail of the last segment, to truncate
    torn: tuple[int, TornTail] | None = None
    #: (segment's first LSN, damage): what stopped recovery early
    corrupt: tuple[int, Corrupt] | None = None
    #: segments after the damaged one, whose records were not read
    unread_segments: list[int] = field(default_factory=list)
    #: records the history store does not hold yet (after its LSN), in LSN order
    to_store: list[WalRecord] = field(default_factory=list)


def recover(
    limits: Limits,
    snapshot: Snapshot | None,
    segments: list[tuple[int, bytes]],
    *,
    tail_bytes: int | None = None,
    store_lsn: int | None = None,
) -> tuple[Chat, RecoveryReport]:
    """Load `snapshot`, then replay the records of `segments` after its LSN.

    Args:
        limits: the limits the rebuilt Chat enforces.
        snapshot: the newest valid snapshot, if any.
        segments: (first LSN, bytes) of every segment that may hold records after the
            snapshot or after `store_lsn`, in LSN order.
        tail_bytes: the hot tails' budget of the rebuilt Chat.
        store_lsn: the last record the history store holds; the records after it are
            collected in `report.to_store` (None: collect none).

    Returns:
        The state, and a report of what was read, dropped or found damaged.
    """
    chat = Chat(limits, tail_bytes)
    report = RecoveryReport()
    if snapshot is not None:
        if snapshot.filter is not None:
            chat.sequencer.filter = CmidFilter.from_state(snapshot.filter)
        for state in snapshot.conversations:
            chat.restore(state)
        chat.clock.observe(snapshot.clock)
        report.snapshot_lsn = report.last_lsn = snapshot.lsn
    applied = report.last_lsn  # records up to here are in the state
    if store_lsn is not None:
        report.last_lsn = min(report.last_lsn, store_lsn)
    expected = report.last_lsn + 1
    for index, (first_lsn, data) in enumerate(segments):
        report.segments += 1
        if first_lsn > expected:
            gap = Corrupt(0, f"records {expected}..{first_lsn - 1} are missing")
            report.corrupt = (first_lsn, gap)
            report.unread_segments = [lsn for lsn, _ in segments[index + 1 :]]
            break
        scan = scan_segment(data, first_lsn)
        for item in scan.records:
            if item.lsn < expected:
                continue  # already in the snapshot and the store
            if store_lsn is not None and item.lsn > store_lsn:
                report.to_store.append(item)
            if item.lsn > applied:
                chat.apply(item.record, item.lsn)
                report.replayed += 1
            report.last_lsn = item.lsn
            expected = item.lsn + 1
        if scan.records:
            expected = max(expected, scan.records[-1].lsn + 1)
        last = index == len(segments) - 1
        if isinstance(scan.damage, TornTail) and last:
            report.torn = (first_lsn, scan.damage)
        elif scan.damage is not None:
            damage = scan.damage
            if isinstance(damage, TornTail):
                damage = Corrupt(damage.offset, "a segment that is not the last ends torn")
            report.corrupt = (first_lsn, damage)
            report.unread_segments = [lsn for lsn, _ in segments[index + 1 :]]
            break
    report.last_lsn = max(report.last_lsn, applied)
    return chat, report
