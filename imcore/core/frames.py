"""One frozen dataclass per client and server frame of the protocol, named with the spec's nouns.

Pure data: parsing and validation live in `codec`, rules in `chat` and `session`.
Server frames turn themselves into plain maps with `to_wire()`; the codec encodes those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import FrameId, ImcoreError

Wire = dict[str, Any]


# --- client frames ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    token: str
    device: str
    seen_ts: int | None = None
    recv: bool = True  # spec §8: False turns off resends for a client that never sends `recv`
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    conv: str
    cmid: str
    body: Any
    ts: int | None = None
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sync:
    conv: str
    after: int | None = None
    before: int | None = None
    limit: int | None = None
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Convs:
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Recv:
    conv: str
    seq: int
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Read:
    conv: str
    seq: int
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupCreate:
    conv: str
    title: str | None = None
    public: bool = False
    members: tuple[str, ...] = ()
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupAdd:
    conv: str
    users: tuple[str, ...]
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRemove:
    conv: str
    users: tuple[str, ...]
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupJoin:
    conv: str
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupLeave:
    conv: str
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRole:
    conv: str
    user: str
    role: str
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupInfo:
    conv: str
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Watch:
    users: tuple[str, ...]
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Unwatch:
    users: tuple[str, ...]
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Typing:
    conv: str
    id: FrameId = None


GroupCommand = GroupCreate | GroupAdd | GroupRemove | GroupJoin | GroupLeave | GroupRole
ClientFrame = (
    Hello
    | Send
    | Sync
    | Convs
    | Recv
    | Read
    | GroupCommand
    | GroupInfo
    | Ping
    | Watch
    | Unwatch
    | Typing
)


# --- events: the conversation log --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SysChange:
    """A membership change (spec §5): the `sys` map of a membership event."""

    type: str  # create | add | remove | join | leave | role
    users: tuple[str, ...] = ()
    role: str | None = None
    title: str | None = None
    public: bool | None = None  # create only: needed to rebuild the roster from the log

    def to_row(self) -> list[Any]:
        """The compact form the log and snapshots store."""
        return [self.type, list(self.users), self.role, self.title, self.public]

    @classmethod
    def from_row(cls, row: list[Any]) -> SysChange:
        kind, users, role, title, public = row
        return cls(type=kind, users=tuple(users), role=role, title=title, public=public)

    def to_wire(self) -> Wire:
        wire: Wire = {"type": self.type}
        if self.users:
            wire["users"] = list(self.users)
        if self.role is not None:
            wire["role"] = self.role
        if self.title is not None:
            wire["title"] = self.title
        if self.public is not None:
            wire["public"] = self.public
        return wire


@dataclass(slots=True, kw_only=True)
class Event:
    """One entry of a conversation's log: a message (`body`) or a membership change (`sys`).

    Pushed as a `msg` frame and returned without `op` by `sync` (spec §4, §8). Never changed
    once made; not declared frozen only because a frozen dataclass costs several times more
    to build, and a server builds one per message and a million at a restart.
    """

    conv: str
    seq: int
    ts: int
    sender: str  # `from` on the wire
    dev: str
    at: int
    cmid: str | None = None
    body: Any = None
    sys: SysChange | None = None

    @property
    def is_message(self) -> bool:
        return self.sys is None

    def to_wire(self, *, op: bool = True) -> Wire:
        wire: Wire = {"op": "msg"} if op else {}
        wire.update(conv=self.conv, seq=self.seq, ts=self.ts)
        wire["from"] = self.sender
        wire["dev"] = self.dev
        if self.sys is None:
            wire["cmid"] = self.cmid
            wire["body"] = self.body
        else:
            wire["sys"] = self.sys.to_wire()
        wire["at"] = self.at
        return wire


# --- server frames -----------------------------------------------------------------------------


def _with_id(wire: Wire, frame_id: FrameId) -> Wire:
    if frame_id is not None:
        wire["id"] = frame_id
    return wire


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvSummary:
    """One entry of `welcome.convs` and of the `convs` reply (spec §3).

    A direct conversation also carries where the peer has read and received up to
    (`peer_read`, `peer_delivered`; 0 when none); a group carries neither (None).
    """

    conv: str
    head: int
    read: int
    unread: int
    floor: int
    ts_last: int
    peer_read: int | None = None
    peer_delivered: int | None = None

    def to_wire(self) -> Wire:
        wire: Wire = {
            "conv": self.conv,
            "head": self.head,
            "read": self.read,
            "unread": self.unread,
            "floor": self.floor,
            "ts_last": self.ts_last,
        }
        if self.peer_read is not None:
            wire["peer_read"] = self.peer_read
        if self.peer_delivered is not None:
            wire["peer_delivered"] = self.peer_delivered
        return wire


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    user: str
    device: str
    session: str
    ts: int
    heartbeat_ms: int
    limits: Wire
    convs: tuple[ConvSummary, ...]
    id: FrameId = None

    def to_wire(self) -> Wire:
        wire: Wire = {
            "op": "welcome",
            "user": self.user,
            "device": self.device,
            "session": self.session,
            "ts": self.ts,
            "heartbeat_ms": self.heartbeat_ms,
            "limits": self.limits,
            "convs": [c.to_wire() for c in self.convs],
        }
        return _with_id(wire, self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    conv: str
    cmid: str
    seq: int
    ts: int
    dup: bool = False
    id: FrameId = None

    def to_wire(self) -> Wire:
        wire: Wire = {
            "op": "ack",
            "conv": self.conv,
            "cmid": self.cmid,
            "seq": self.seq,
            "ts": self.ts,
            "dup": self.dup,
        }
        return _with_id(wire, self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok:
    conv: str | None = None
    seq: int | None = None
    id: FrameId = None

    def to_wire(self) -> Wire:
        wire: Wire = {"op": "ok"}
        if self.conv is not None:
            wire["conv"] = self.conv
        if self.seq is not None:
            wire["seq"] = self.seq
        return _with_id(wire, self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    conv: str
    title: str | None
    owner: str | None
    public: bool
    members: tuple[tuple[str, str], ...]
    head: int
    id: FrameId = None

    def to_wire(self) -> Wire:
        wire: Wire = {
            "op": "group",
            "conv": self.conv,
            "title": self.title,
            "owner": self.owner,
            "public": self.public,
            "members": [{"user": u, "role": r} for u, r in self.members],
            "head": self.head,
        }
        return _with_id(wire, self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    conv: str
    msgs: tuple[Event, ...]
    head: int
    floor: int
    more: bool
    id: FrameId = None

    def to_wire(self) -> Wire:
        wire: Wire = {
            "op": "batch",
            "conv": self.conv,
            "msgs": [e.to_wire(op=False) for e in self.msgs],
            "head": self.head,
            "floor": self.floor,
            "more": self.more,
        }
        return _with_id(wire, self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvList:
    convs: tuple[ConvSummary, ...]
    id: FrameId = None

    def to_wire(self) -> Wire:
        return _with_id({"op": "convs", "convs": [c.to_wire() for c in self.convs]}, self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadReceipt:
    conv: str
    user: str
    seq: int

    def to_wire(self) -> Wire:
        return {"op": "read", "conv": self.conv, "user": self.user, "seq": self.seq}


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    conv: str
    user: str
    seq: int

    def to_wire(self) -> Wire:
        return {"op": "delivered", "conv": self.conv, "user": self.user, "seq": self.seq}


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    ts: int
    id: FrameId = None

    def to_wire(self) -> Wire:
        return _with_id({"op": "pong", "ts": self.ts}, self.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence:
    user: str
    online: bool
    last_seen: int | None

    def to_wire(self) -> Wire:
        return {
            "op": "presence",
            "user": self.user,
            "online": self.online,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TypingNotice:
    conv: str
    user: str

    def to_wire(self) -> Wire:
        return {"op": "typing", "conv": self.conv, "user": self.user}


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    code: str
    message: str
    retry_ms: int | None = None
    id: FrameId = None

    @classmethod
    def from_exc(cls, exc: ImcoreError, *, id: FrameId = None) -> Error:
        return cls(
            code=exc.code.value,
            message=exc.message,
            retry_ms=getattr(exc, "retry_ms", None),
            id=id,
        )

    def to_wire(self) -> Wire:
        wire: Wire = {"op": "error", "code": self.code, "message": self.message}
        if self.retry_ms is not None:
            wire["retry_ms"] = self.retry_ms
        return _with_id(wire, self.id)


ServerFrame = (
    Welcome
    | Ack
    | Ok
    | Group
    | Batch
    | ConvList
    | Event
    | ReadReceipt
    | Delivered
    | Pong
    | Presence
    | TypingNotice
    | Error
)
