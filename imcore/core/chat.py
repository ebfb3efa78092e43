"""Chat, the whole state of the server: conversations, rosters, cursors, dedup, the clock.

Pure: values in, values out. `submit` validates and sequences a write and returns the
record to commit; `apply` makes a committed record visible and says who must hear of it.
The server owns the time between the two (the commit). See `sequencer` for why seqs are
given out before commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import ids
from .clock import LamportClock
from .conversation import Conversation, ConversationState
from .cursors import Cursors
from .errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from .frames import (
    Ack,
    Batch,
    ConvSummary,
    Delivered,
    Event,
    Group,
    GroupCommand,
    GroupCreate,
    GroupInfo,
    Ok,
    Read,
    ReadReceipt,
    Recv,
    Send,
    ServerFrame,
    Sync,
    Typing,
    TypingNotice,
)
from .frames import Error as ErrorFrame
from .history import NOT_ASKED, Fetched, FindCmid, HotTail, NotAsked, ReadPage
from .membership import Roster, check_create, joined, left
from .presence import Presence
from .records import CursorRecord, DeliveredRecord, FloorRecord, Record
from .sequencer import Sequencer

if TYPE_CHECKING:
    from .dedup import FilterState
    from .limits import Limits

#: spec §9: at most one typing notice per second per user and conversation.
TYPING_INTERVAL_MS = 1000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a write produced: the reply for the writer, and the record to commit (if any).

    The reply is released only after the record is committed; a dup's reply, which has no
    record, still waits behind the commits in flight so it never overtakes its original.
    """

    reply: ServerFrame | None
    record: Record | None = None


def refusal(outcome: Outcome) -> ServerFrame | None:
    """The reply for a write whose commit failed: `unavailable`, never its ack (spec §7)."""
    if outcome.reply is None:
        return None
    exc = Unavailable("the server could not make this write durable")
    return ErrorFrame.from_exc(exc, id=getattr(outcome.reply, "id", None))


@dataclass(frozen=True, slots=True)
class Audience:
    """Which live connections a push goes to.

    By default every member of the conversation (the fan-out table's entry); with `users`,
    the live devices of those users; with `sessions`, those connections (presence
    watchers). `exclude_user` and `exclude_device` drop the originator: a typist's own
    devices, the device that sent `read`.
    """

    users: frozenset[str] | None = None
    sessions: frozenset[str] | None = None
    exclude_user: str | None = None
    exclude_device: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Deliveries:
    """One frame to push to an audience, and the membership deltas around it.

    `conv` is the ordering domain: pushes with the same `conv` reach a connection in the
    order they were made. Presence pushes use the watched user's id (never a conv id).

    The fan-out adds the live connections of `joined` before pushing (so new members get
    the event that added them) and removes those of `left` after (spec §5).
    """

    conv: str
    frame: ServerFrame
    audience: Audience = field(default_factory=Audience)
    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()


class Chat:
    """The server's state machine.

    Args:
        limits: the limits to enforce.
        tail_bytes: the byte budget of all hot tails together (`history.HotTail`); None
            keeps every event in memory (a core without a store, as in unit tests).
    """

    def __init__(self, limits: Limits, tail_bytes: int | None = None) -> None:
        self.limits = limits
        self.clock = LamportClock()
        self.sequencer = Sequencer(self.clock)
        self.tail = HotTail(tail_bytes)
        self.cursors = Cursors()
        self.presence = Presence(limits.max_devices, limits.max_watch)
        self.read_only = False
        self._convs: dict[str, Conversation] = {}
        self._user_convs: dict[str, set[str]] = {}  # committed membership, by user
        self._typing: dict[tuple[str, str], int] = {}

    # --- writes -------------------------------------------------------------------------------

    def submit(
        self,
        user: str,
        device: str,
        cmd: Send | Read | GroupCommand,
        now_ms: int,
        stored: tuple[int, int] | NotAsked | None = NOT_ASKED,
    ) -> Outcome | FindCmid:
        """Validate and sequence one write.

        Args:
            stored: for a `send`, the store's answer to the `FindCmid` this call
                returned before for the same frame.

        Returns:
            The reply and the record to commit; `record` is None when nothing changes
            (a dup send, a read cursor that would not move). Or, for a send whose cmid the
            filter cannot rule out, the query to answer before calling again.

        Raises:
            ImcoreError: the write is refused; nothing changed.
        """
        if self.read_only:
            raise Unavailable("the server cannot write to its log; reads still work")
        match cmd:
            case Send():
                return self._send(user, device, cmd, now_ms, stored)
            case Read():
                return self._read(user, device, cmd)
            case _:
                return self._group(user, device, cmd, now_ms)

    def _send(
        self,
        user: str,
        device: str,
        cmd: Send,
        now_ms: int,
        stored: tuple[int, int] | NotAsked | None,
    ) -> Outcome | FindCmid:
        conv = cmd.conv
        ts_hint = None if cmd.ts is None else self.clock.check(cmd.ts)
        # A retry is answered before membership is checked: a sender removed since its
        # first try still learns that the message was stored (spec §4). The exact index is
        # asked again after a store lookup: a retry may have been sequenced meanwhile.
        sequencer = self.sequencer
        first = sequencer.find(conv, user, cmd.cmid)
        if first is None and not isinstance(stored, NotAsked):
            first = stored
        elif first is None and sequencer.may_be_stored(conv, user, cmd.cmid):
            return FindCmid(conv, user, cmd.cmid)
        if first is not None:
            seq, ts = first
            return Outcome(Ack(conv=conv, cmid=cmd.cmid, seq=seq, ts=ts, dup=True, id=cmd.id))
        c = self._convs.get(conv)
        if ids.is_group(conv):
            if c is None or c.staged is None:
                raise NotFound(f"no group {conv}")
            if user not in c.staged:
                raise Forbidden(f"{user} is not a member of {conv}")
        elif user not in ids.dm_users(conv):
            raise Forbidden(f"{user} is not a party of {conv}")
        if ts_hint is not None:
            self.clock.observe(ts_hint)
        if c is None:
            self._convs[conv] = Conversation(conv)
        seq, ts = self.sequencer.sequence(conv, user, cmd.cmid)
        event = Event(
            conv=conv,
            seq=seq,
            ts=ts,
            sender=user,
            dev=device,
            at=now_ms,
            cmid=cmd.cmid,
            body=cmd.body,
        )
        return Outcome(Ack(conv=conv, cmid=cmd.cmid, seq=seq, ts=ts, id=cmd.id), event)

    def _read(self, user: str, device: str, cmd: Read) -> Outcome:
        c = self._readable(user, cmd.conv)
        if cmd.seq > c.head:
            raise Invalid(f"seq {cmd.seq} is beyond the head of {cmd.conv} ({c.head})")
        reply = None if cmd.id is None else Ok(id=cmd.id)
        if cmd.seq <= self.cursors.read(cmd.conv, user):
            return Outcome(reply)  # spec §8: a lower read is ignored
        return Outcome(reply, CursorRecord(cmd.conv, user, device, cmd.seq))

    def _group(self, user: str, device: str, cmd: GroupCommand, now_ms: int) -> Outcome:
        conv = cmd.conv
        c = self._convs.get(conv)
        if isinstance(cmd, GroupCreate):
            if c is not None:
                raise Conflict(f"group {conv} exists")
            change = check_create(user, cmd, self.limits.max_group_members)
            c = self._convs[conv] = Conversation(conv, staged=Roster())
        elif c is None or c.staged is None:
            raise NotFound(f"no group {conv}")
        else:
            change = c.staged.check(user, cmd, self.limits.max_group_members)
        assert c.staged is not None
        c.staged.fold(change, user)
        seq, ts = self.sequencer.sequence(conv, user, None)
        event = Event(conv=conv, seq=seq, ts=ts, sender=user, dev=device, at=now_ms, sys=change)
        return Outcome(Ok(conv=conv, seq=seq, id=cmd.id), event)

    def receive(self, user: str, device: str, cmd: Recv) -> Outcome | None:
        """A device has everything up to `seq` (spec §8).

        In a direct conversation that is the user's delivered cursor, shown to the peer: a
        recv that moves its *staged* value makes a record to commit, and `apply` of that
        record pushes `delivered`, so the peer is never shown a position a crash could take
        back. A recv that does not move it makes none, but its `ok` still waits behind the
        commits in flight: an `ok` means the position it covers is durable. Groups keep no
        delivered cursor. Not refused when the server is read-only: the committer answers
        a refused record's reply itself.

        Returns:
            None when nothing waits on a commit (a group, notes-to-self, a recv with no
            `id` that moves nothing): answer at once. Else the outcome to submit.

        Raises:
            Forbidden, NotFound, Invalid: not a member, no such group, seq beyond head.
        """
        conv = cmd.conv
        c = self._readable(user, conv)
        if cmd.seq > c.head:
            raise Invalid(f"seq {cmd.seq} is beyond the head of {conv} ({c.head})")
        if ids.is_group(conv) or ids.dm_peer(conv, user) is None:
            return None
        reply = None if cmd.id is None else Ok(id=cmd.id)
        if self.cursors.stage_delivered(conv, user, cmd.seq):
            return Outcome(reply, DeliveredRecord(conv, user, device, cmd.seq))
        return None if reply is None else Outcome(reply)

    def apply(self, record: Record, lsn: int = 0) -> Deliveries | None:
        """Make a committed record visible; `lsn` is where the log holds it.

        Returns:
            The push it causes, if any.
        """
        if isinstance(record, CursorRecord):
            return self._apply_read(record)
        if isinstance(record, DeliveredRecord):
            return self._apply_delivered(record)
        if isinstance(record, FloorRecord):
            self._apply_floor(record)
            return None
        conv = record.conv
        if record.cmid is not None:
            # Before the check below: a fuzzy snapshot's conversation may hold an event
            # its filter (captured apart) does not.
            self.sequencer.committed(record)
        c = self._convs.get(conv)
        if c is None:
            c = self._convs[conv] = Conversation(conv, Roster() if ids.is_group(conv) else None)
        if record.seq <= c.head:
            return None  # replayed over a snapshot that already holds it
        change = record.sys
        if record.seq > self.sequencer.head(conv):  # replayed from the log of an earlier run
            self.sequencer.replay(record)
            if change is not None and c.staged is not None:
                c.staged.fold(change, record.sender)
        new = c.head == 0
        c.append(record)
        self._forget(self.tail.added(c, record, lsn))
        added: tuple[str, ...] = ()
        removed: tuple[str, ...] = ()
        if change is not None:
            assert c.roster is not None
            c.roster.fold(change, record.sender)
            added, removed = joined(change), left(change)
        elif new:
            added = tuple(dict.fromkeys(ids.dm_users(conv)))
        for u in added:
            self._user_convs.setdefault(u, set()).add(conv)
            if change is not None:
                # A new member's unread count starts at its joining, not at the floor.
                self.cursors.advance_read(conv, u, record.seq - 1)
        for u in removed:
            self._user_convs.get(u, set()).discard(conv)
        return Deliveries(conv, record, joined=added, left=removed)

    def _apply_read(self, record: CursorRecord) -> Deliveries | None:
        conv, user = record.conv, record.user
        if not self.cursors.advance_read(conv, user, record.seq):
            return None
        receipt = ReadReceipt(conv=conv, user=user, seq=record.seq)
        c = self._convs[conv]
        origin = (user, record.device)
        if c.roster is not None and len(c.roster) > self.limits.receipt_fanout_max:
            return Deliveries(conv, receipt, Audience(frozenset({user}), exclude_device=origin))
        return Deliveries(conv, receipt, Audience(exclude_device=origin))

    def _apply_delivered(self, record: DeliveredRecord) -> Deliveries | None:
        conv, user = record.conv, record.user
        if not self.cursors.advance_delivered(conv, user, record.seq):
            return None
        peer = None if ids.is_group(conv) else ids.dm_peer(conv, user)
        if peer is None:
            return None  # `receive` makes none of these; a log is not trusted to agree
        frame = Delivered(conv=conv, user=user, seq=record.seq)
        return Deliveries(conv, frame, Audience(frozenset({peer})))

    def _apply_floor(self, record: FloorRecord) -> None:
        c = self._convs.get(record.conv)
        if c is not None:
            dropped = c.retain_from(record.floor)
            self.tail.dropped(dropped)
            self._forget(dropped)

    def retention_due(self) -> list[FloorRecord]:
        """The floor moves that `retain_messages` calls for now (the server commits them
        from time to time, so the store deletes in batches rather than an event a send)."""
        keep = self.limits.retain_messages
        if not keep:
            return []
        return [
            FloorRecord(conv, c.head - keep + 1)
            for conv, c in self._convs.items()
            if c.head - c.floor + 1 > keep
        ]

    def floors(self) -> list[tuple[str, int]]:
        """(conversation, floor) of every conversation with events: where retention by
        age starts looking."""
        return [(conv, c.floor) for conv, c in self._convs.items() if c.head > 0]

    def stored(self, lsn: int) -> None:
        """The history store holds every record up to `lsn`: tails may shrink to budget."""
        self._forget(self.tail.stored(lsn))

    def _forget(self, evicted: list[Event]) -> None:
        forget = self.sequencer.forget
        for e in evicted:
            if e.cmid is not None:
                forget(e.conv, e.sender, e.cmid)

    # --- snapshots -----------------------------------------------------------------------------

    def conversation_ids(self) -> list[str]:
        """Every conversation with committed events."""
        return [conv for conv, c in self._convs.items() if c.head > 0]

    def capture(self, conv: str) -> ConversationState:
        """An immutable copy of one committed conversation, for a snapshot."""
        cursors = self.cursors
        return self._convs[conv].capture(cursors.reads(conv), cursors.delivered_all(conv))

    def capture_filter(self) -> FilterState:
        """The cmid filter, for a snapshot: captured after its conversations, so it holds
        every cmid they hold."""
        return self.sequencer.filter.to_state()

    def restore(self, state: ConversationState) -> None:
        """Load one conversation from a snapshot (into a Chat that does not have it yet).
        The events of an old-format state count towards its unread counters and the cmid
        filter, and are not kept: the store holds them."""
        c = self._convs[state.conv] = Conversation.restore(state)
        self.sequencer.restore(state.conv, c.head)
        for e in state.events:
            if e.cmid is not None:
                self.sequencer.committed(e)
        members = ids.dm_users(state.conv) if c.roster is None else c.roster.roles
        for user in members:
            self._user_convs.setdefault(user, set()).add(state.conv)
        for user, seq in state.reads.items():
            self.cursors.advance_read(state.conv, user, seq)
        for user, seq in state.delivered.items():
            self.cursors.advance_delivered(state.conv, user, seq)

    def commit_failed(self) -> None:
        """The log could not be written: refuse every write from now on (spec §7)."""
        self.read_only = True

    # --- ephemeral ----------------------------------------------------------------------------

    def typing(self, user: str, cmd: Typing, now_ms: int) -> Deliveries | None:
        """Relay a typing notice to the other members, at most once a second (spec §9).

        In a direct conversation the notice is addressed to the peer by name: the fan-out
        has no route for a DM before its first event, and the peer's live devices are
        known all the same. Notes-to-self have nobody to tell.
        """
        c = self._readable(user, cmd.conv)
        if c.roster is not None and len(c.roster) > self.limits.receipt_fanout_max:
            return None
        audience = Audience(exclude_user=user)
        if not ids.is_group(cmd.conv):
            peer = ids.dm_peer(cmd.conv, user)
            if peer is None:
                return None
            audience = Audience(users=frozenset({peer}))
        key = (user, cmd.conv)
        if now_ms - self._typing.get(key, -TYPING_INTERVAL_MS) < TYPING_INTERVAL_MS:
            return None
        if len(self._typing) > 10_000:  # keep the table to notices that still matter
            self._typing = {
                k: t for k, t in self._typing.items() if now_ms - t < TYPING_INTERVAL_MS
            }
        self._typing[key] = now_ms
        return Deliveries(cmd.conv, TypingNotice(conv=cmd.conv, user=user), audience)

    # --- reads --------------------------------------------------------------------------------

    def _readable(self, user: str, conv: str) -> Conversation:
        """The committed conversation `user` may read; an empty one for a DM not yet begun."""
        c = self._convs.get(conv)
        if ids.is_group(conv):
            if c is None or c.roster is None or c.head == 0:
                raise NotFound(f"no group {conv}")
            if user not in c.roster:
                raise Forbidden(f"{user} is not a member of {conv}")
            return c
        if user not in ids.dm_users(conv):
            raise Forbidden(f"{user} is not a party of {conv}")
        return c if c is not None else Conversation(conv)

    def head(self, conv: str) -> int:
        """The last committed seq of `conv` (0 if it has none)."""
        c = self._convs.get(conv)
        return 0 if c is None else c.head

    def floor(self, conv: str) -> int:
        c = self._convs.get(conv)
        return 1 if c is None else c.floor

    def events(self, conv: str) -> list[Event]:
        """The events of `conv` held in memory (its hot tail), in seq order."""
        c = self._convs.get(conv)
        return [] if c is None else list(c.tail)

    def retained(self) -> tuple[int, int]:
        """(conversations with events, events retained in all of them), without copying."""
        live = [c for c in self._convs.values() if c.head > 0]
        return len(live), sum(c.head - c.floor + 1 for c in live)

    def events_from(
        self, conv: str, first: int, stored: Fetched | None = None
    ) -> list[Event] | ReadPage:
        """The retained events of `conv` from seq `first` on (for resends), or the query
        for the part below the tail; call again with its answer as `stored`."""
        c = self._convs.get(conv)
        if c is None:
            return []
        return self._assemble(c, max(first, c.floor), c.head, stored)

    def _assemble(
        self, c: Conversation, low: int, high: int, stored: Fetched | None
    ) -> list[Event] | ReadPage:
        """Events `low..high` of `c`: from the tail, and from `stored` (the store's answer)
        below it; the query for the store when that part is missing."""
        if low > high:
            return []
        tail = c.from_tail(low, high)
        missing = (tail[0].seq if tail else high + 1) - low
        if missing <= 0:
            self.tail.hits += 1
            return tail
        if stored is not None and stored[0].high >= low + missing - 1:
            # What the store had of it (all of it, unless the store is damaged). A query
            # that ended lower was made before the tail shrank again: ask again.
            return [e for e in stored[1] if low <= e.seq < low + missing] + tail
        self.tail.misses += 1
        return ReadPage(c.conv, low, low + missing - 1)

    def convs_of(self, user: str) -> frozenset[str]:
        """The conversations `user` is in, as committed."""
        return frozenset(self._user_convs.get(user, ()))

    def members(self, conv: str) -> frozenset[str]:
        """The committed members of `conv` (the two parties of a DM)."""
        c = self._convs.get(conv)
        if ids.is_group(conv):
            return frozenset(c.roster.roles) if c is not None and c.roster else frozenset()
        return frozenset(ids.dm_users(conv))

    def roles(self, conv: str) -> dict[str, str]:
        """Committed members with their roles ("member" for both parties of a DM)."""
        c = self._convs.get(conv)
        if c is not None and c.roster is not None:
            return dict(c.roster.roles)
        return dict.fromkeys(self.members(conv), "member") if c is not None else {}

    def summaries(self, user: str) -> tuple[ConvSummary, ...]:
        """`welcome.convs` (spec §3): every conversation of `user`, most recent first; a
        direct one with the peer's committed read and delivered cursors (0 for none, and in
        notes-to-self)."""
        cursors = self.cursors
        out = []
        for conv in self._user_convs.get(user, ()):
            c = self._convs[conv]
            read = cursors.read(conv, user)
            peer_read = peer_delivered = None
            if c.roster is None:
                peer = ids.dm_peer(conv, user)
                peer_read = 0 if peer is None else cursors.read(conv, peer)
                peer_delivered = 0 if peer is None else cursors.delivered(conv, peer)
            out.append(
                ConvSummary(
                    conv=conv,
                    head=c.head,
                    read=read,
                    unread=c.unread(user, read),
                    floor=c.floor,
                    ts_last=c.ts_last,
                    peer_read=peer_read,
                    peer_delivered=peer_delivered,
                )
            )
        out.sort(key=lambda s: (-s.ts_last, s.conv))
        return tuple(out)

    def sync(self, user: str, cmd: Sync, stored: Fetched | None = None) -> Batch | ReadPage:
        """A page of history (spec §8), or the query for the part of it only the store
        has; call again with its answer as `stored`.

        Raises:
            Forbidden, NotFound: not a member; no such group.
        """
        c = self._readable(user, cmd.conv)
        limit = min(cmd.limit or self.limits.sync_limit, self.limits.sync_limit_max)
        low, high, more = c.wanted(cmd.after, cmd.before, limit)
        msgs = self._assemble(c, low, high, stored)
        if isinstance(msgs, ReadPage):
            return msgs
        return Batch(
            conv=cmd.conv, msgs=tuple(msgs), head=c.head, floor=c.floor, more=more, id=cmd.id
        )

    def group_info(self, user: str, cmd: GroupInfo) -> Group:
        """`group.info`: members may ask; anyone may ask about a public group.

        Raises:
            NotFound, Forbidden.
        """
        c = self._convs.get(cmd.conv)
        if c is None or c.roster is None or c.head == 0:
            raise NotFound(f"no group {cmd.conv}")
        roster = c.roster
        if user not in roster and not roster.public:
            raise Forbidden(f"{user} is not a member of {cmd.conv}")
        return Group(
            conv=cmd.conv,
            title=roster.title,
            owner=roster.owner,
            public=roster.public,
            members=tuple(sorted(roster.roles.items())),
            head=c.head,
            id=cmd.id,
        )
