"""Session, one connection's protocol state: hello, auth, rate and abuse limits, dispatch.

Pure: bytes and `now_ms` in, a list of effects out; the server carries the effects out.

Theory of operation
-------------------

    AWAITING_HELLO --hello ok--> OPEN ------------------------+--ended()--> CLOSED
          |                        |                          |
          +--bad token--> error unauthorized, Close(4001) --> CLOSING --close timeout--> Drop
          +--too many devices--> error limit, Close(4029) ----^ (spec §3)
          +--no hello in time: Close(4001) -------------------^
                                   +--abuse: Close(4002) -----^ (spec §10)
                                   +--close() by the server: 4000, 4003, 4008, 1001, 1009...

Once a Close is decided (here, or by the server through `close`) the session is CLOSING:
it has left presence at that moment, so watchers see the change at once, and it ignores
whatever else arrives. The client then has `close_timeout_ms` to read what is in flight
and answer the close; after that the deadline says `Drop` and the server lets the socket
go. Before `welcome`, any frame but `hello` is answered `unauthorized` before its fields are
even looked at (spec §3). In OPEN, reads (`sync`, `convs`, `group.info`, `ping`) are
answered at once with `Write`; writes (`send`, `read`, `group.*`, and a `recv` in a direct
conversation, which moves the durable delivered cursor) become `Submit(outcome)`, whose
reply the server releases only after the outcome's record is committed (spec §7); pushes
become `Publish`.

History the session's answer needs from the store on disk (a `sync` page older than the
hot tail, a resend of such events, a `send` whose cmid the filter cannot rule out) is an
effect too: `Fetch(query, request)`. The server reads the store off the event loop and
hands the answer to `fetched`, which finishes the request. A sync's page goes out when it is
ready, so later frames are not held up by it (replies carry their `id`). A send waiting on
its lookup holds every later frame of the connection (`holding`) until it is sequenced, so a
connection's sends keep their order.

This is the one place where `ImcoreError` becomes an `error` frame (h2's pattern: raise
anywhere, convert once). Errors of the abuse kinds are counted over a sliding minute; more
than `abuse_errors` of them close the connection with 4002 (spec §10).

Deadlines: the session owns every one of its connection's deadlines, in ms: the hello
timeout, the next heartbeat, the next resend and, once closing, the close timeout.
`next_deadline_ms` says when the next one falls and `on_deadline` what it means; the server
only keeps one timer per connection and calls back.

Liveness (spec §10): every `heartbeat_ms` the deadline asks for a WebSocket ping; any frame
or pong (`heard`) counts as a sign of life, and a connection with none for 3 heartbeats is
closed with 4000.

Resends (spec §8): a push not covered by `recv` within `resend_ms` is pushed again, then
again after twice as long, and so on; after `resend_max` resends the connection is closed
with 4000. State is one entry per conversation with uncovered pushes (the first such seq,
the deadline, the count), never per message: on a healthy connection `pushed` is one
dictionary lookup per push. With the defaults (5 s, 4) a push at 0 s is resent at 5, 15,
35 and 75 s and the connection closed at 155 s.

Sends are rate limited per connection by a token bucket of `send_burst` tokens refilled at
`send_rate` a second (spec §10); an empty bucket answers `rate_limited` with the wait.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from . import auth
from .chat import Audience, Chat, Deliveries, Outcome
from .codec import Codec
from .errors import (
    ABUSE_CODES,
    CloseCode,
    FrameId,
    ImcoreError,
    Invalid,
    Limit,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from .frames import (
    ClientFrame,
    ConvList,
    Convs,
    GroupCommand,
    GroupInfo,
    Hello,
    Ok,
    Ping,
    Pong,
    Read,
    Recv,
    Send,
    ServerFrame,
    Sync,
    Typing,
    Unwatch,
    Watch,
    Welcome,
)
from .frames import Error as ErrorFrame
from .history import NOT_ASKED, Fetched, FindCmid, NotAsked, ReadPage, StoreAnswer, StoreQuery

ABUSE_WINDOW_MS = 60_000  # spec §10: "in a minute"


def _id_of(m: dict[str, Any] | None) -> FrameId:
    return None if m is None else Codec.frame_id(m)


class SessionState(Enum):
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"
    CLOSING = "closing"  # a Close was decided: later frames are ignored
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Write:
    """Send `frame` to this connection now."""

    frame: ServerFrame


@dataclass(frozen=True, slots=True)
class Submit:
    """Commit `outcome.record` (if any), apply it, then send `outcome.reply` here."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Publish:
    """Push to other connections through the fan-out."""

    deliveries: Deliveries


@dataclass(frozen=True, slots=True)
class Opened:
    """The session is authenticated: register it; close `replaced` with 4003 if set."""

    replaced: str | None


@dataclass(frozen=True, slots=True)
class SendPing:
    """Send a WebSocket ping; report its pong with `Session.heard`."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with `code`: take it out of the fan-out now, and send the close
    frame after what is already in flight. The session has already left presence."""

    code: int  # a CloseCode, or an RFC 6455 code the WebSocket layer decided (1002, 1007...)
    reason: str


@dataclass(frozen=True, slots=True)
class Drop:
    """The client did not finish the closing handshake in time: let the socket go."""


@dataclass(frozen=True, slots=True)
class Resend:
    """The resend of the pushes of `conv` from `first` on (what a `Fetch` may be for)."""

    conv: str
    first: int


@dataclass(frozen=True, slots=True)
class Fetch:
    """Carry out `query` on the history store, off the event loop, and hand its answer to
    `Session.fetched` with this effect."""

    query: StoreQuery
    request: Send | Sync | Resend


Effect = Write | Submit | Publish | Opened | SendPing | Close | Drop | Fetch

#: spec §10: a connection silent for this many heartbeats is closed with 4000.
SILENT_HEARTBEATS = 3


class Session:
    """The protocol state of one connection.

    Args:
        chat: the server's state.
        codec: this connection's encoding.
        secret: the HS256 secret that signs client tokens.
        session_id: a unique id for this connection (randomness comes from the caller).
        now_ms: when the connection was accepted.
    """

    __slots__ = (
        "_abuse",
        "_close_by_ms",
        "_heard_ms",
        "_held",
        "_hello_by_ms",
        "_in_presence",
        "_next_beat_ms",
        "_refilled_ms",
        "_tokens",
        "_unacked",
        "chat",
        "codec",
        "device",
        "id",
        "last_op",
        "recv_enabled",
        "secret",
        "state",
        "user",
    )

    def __init__(
        self, chat: Chat, codec: Codec, *, secret: str, session_id: str, now_ms: int
    ) -> None:
        self.chat = chat
        self.codec = codec
        self.secret = secret
        self.id = session_id
        self.state = SessionState.AWAITING_HELLO
        self.user = ""
        self.device = ""
        self.recv_enabled = True
        self._tokens = float(chat.limits.send_burst)
        self._refilled_ms = now_ms
        self._heard_ms = now_ms
        self._hello_by_ms = now_ms + chat.limits.hello_timeout_ms
        self._next_beat_ms = now_ms + chat.limits.heartbeat_ms
        self._close_by_ms = 0  # set when a close is decided
        self._in_presence = False
        self._abuse: deque[int] | None = None  # times of recent bad frames; most have none
        # conv -> [first seq not covered by recv, when to resend, resends so far]
        self._unacked: dict[str, list[int]] = {}
        self._held: list[bytes | str] | None = None  # frames behind a send's lookup
        self.last_op: str | None = None  # the op of the last frame handled, for metrics

    @property
    def holding(self) -> bool:
        """A send waits on a store lookup: later frames are held (read no more for now)."""
        return self._held is not None

    def handle(self, data: bytes | str, now_ms: int) -> list[Effect]:
        """Take one WebSocket message from the client.

        Returns:
            The effects to carry out, in order.
        """
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return []
        self._heard_ms = now_ms
        if self._held is not None:
            self._held.append(data)
            return []
        m = None
        self.last_op = None
        try:
            m = self.codec.load(data)
            self.last_op = m["op"]
            if self.state is not SessionState.OPEN and m["op"] != "hello":
                raise Unauthorized("say hello first")
            return self._dispatch(self.codec.parse(m), now_ms)
        except ImcoreError as exc:
            return self._refused(exc, m, now_ms)

    def fetched(self, fetch: Fetch, answer: StoreAnswer, now_ms: int) -> list[Effect]:
        """The store's answer to `fetch.query`: finish the request (and, after a send,
        take the frames held behind it)."""
        if self.state is not SessionState.OPEN:
            self._held = None  # closing: what was held is ignored, like later frames
            return []
        request, query = fetch.request, fetch.query
        effects: list[Effect]
        try:
            if isinstance(request, Send):
                assert not isinstance(answer, list)
                effects = self._submit_send(request, now_ms, answer)
            else:
                assert isinstance(query, ReadPage)
                assert isinstance(answer, list)
                if isinstance(request, Sync):
                    effects = self._sync(request, (query, answer))
                else:
                    effects = self._resend_events(request, (query, answer))
        except ImcoreError as exc:
            effects = self._refused(exc, None, now_ms, frame_id=getattr(request, "id", None))
        if isinstance(request, Send) and not (effects and isinstance(effects[-1], Fetch)):
            held, self._held = self._held or [], None
            for data in held:
                effects += self.handle(data, now_ms)
        return effects

    def fetch_failed(self, fetch: Fetch, now_ms: int) -> list[Effect]:
        """The store could not answer `fetch.query`: the request is refused (`unavailable`),
        and frames held behind a send are taken."""
        exc = Unavailable("the history store could not be read; try again")
        request = fetch.request
        effects = (
            [] if isinstance(request, Resend) else self._refused(exc, None, now_ms, request.id)
        )
        if isinstance(request, Send):
            held, self._held = self._held or [], None
            for data in held:
                effects += self.handle(data, now_ms)
        return effects

    def _refused(
        self, exc: ImcoreError, m: dict[str, Any] | None, now_ms: int, frame_id: FrameId = None
    ) -> list[Effect]:
        """The `error` frame of a refused frame, and a close where the refusal calls for one."""
        if exc.frame_id is not None:
            frame_id = exc.frame_id
        elif m is not None:
            frame_id = _id_of(m)
        effects: list[Effect] = [Write(ErrorFrame.from_exc(exc, id=frame_id))]
        hello = m is not None and m["op"] == "hello"
        if hello and self.state is SessionState.AWAITING_HELLO:
            if isinstance(exc, Unauthorized):
                effects += self.close(CloseCode.UNAUTHORIZED, "unauthorized", now_ms)
            elif isinstance(exc, Limit):
                effects += self.close(CloseCode.LIMIT, "too many devices", now_ms)
        if exc.code in ABUSE_CODES and self._abused(now_ms):
            effects += self.close(CloseCode.ABUSE, "too many bad frames", now_ms)
        return effects

    def heard(self, now_ms: int) -> None:
        """The client showed it is alive without a frame (a pong)."""
        self._heard_ms = max(self._heard_ms, now_ms)

    # --- deadlines ----------------------------------------------------------------------------

    def next_deadline_ms(self) -> int | None:
        """When `on_deadline` next has something to do; None once the connection ended."""
        state = self.state
        if state is SessionState.OPEN:
            due = self._next_beat_ms
            for entry in self._unacked.values():
                if entry[1] < due:
                    due = entry[1]
            return due
        if state is SessionState.AWAITING_HELLO:
            return min(self._hello_by_ms, self._next_beat_ms)
        if state is SessionState.CLOSING:
            return self._close_by_ms
        return None

    def on_deadline(self, now_ms: int) -> list[Effect]:
        """Whatever deadlines have come by `now_ms`: the hello timeout (close 4001, spec §3),
        a heartbeat (a ping, or close 4000 after 3 silent ones, spec §10), resends (spec §8),
        the close timeout (`Drop`)."""
        state = self.state
        if state is SessionState.CLOSING:
            return [Drop()] if now_ms >= self._close_by_ms else []
        if state is SessionState.CLOSED:
            return []
        if state is SessionState.AWAITING_HELLO and now_ms >= self._hello_by_ms:
            return self.close(CloseCode.UNAUTHORIZED, "no hello in time", now_ms)
        effects: list[Effect] = []
        if now_ms >= self._next_beat_ms:
            heartbeat = self.chat.limits.heartbeat_ms
            self._next_beat_ms += heartbeat
            if now_ms - self._heard_ms >= SILENT_HEARTBEATS * heartbeat:
                return self.close(CloseCode.TIMEOUT, "no sign of life", now_ms)
            effects.append(SendPing())
        if state is SessionState.OPEN and self._unacked:
            effects += self._resend(now_ms)
        return effects

    # --- resend of pushes not covered by recv (spec §8) ---------------------------------------

    def pushed(self, conv: str, seq: int, now_ms: int) -> bool:
        """Event `seq` of `conv` was pushed here. Called for every push, so it does nothing
        unless this is the conversation's first push not yet covered by `recv`.

        Returns:
            Whether a new resend deadline was set (the caller's timer may need to move).
        """
        if conv in self._unacked or not self.recv_enabled:
            return False
        self._unacked[conv] = [seq, now_ms + self.chat.limits.resend_ms, 0]
        return True

    def _covered(self, conv: str, seq: int, now_ms: int) -> None:
        entry = self._unacked.get(conv)
        if entry is None or seq < entry[0]:
            return
        if seq >= self.chat.head(conv):
            del self._unacked[conv]
        else:  # progress: what is left gets a fresh deadline and count
            self._unacked[conv] = [seq + 1, now_ms + self.chat.limits.resend_ms, 0]

    def _resend(self, now_ms: int) -> list[Effect]:
        """Push again what is overdue, the n-th time `resend_ms * 2**n` after the last; after
        `resend_max` resends with no `recv`, close 4000 (spec §8)."""
        limits = self.chat.limits
        effects: list[Effect] = []
        for conv, entry in self._unacked.items():
            first, due, sent = entry
            if due > now_ms:
                continue
            if sent >= limits.resend_max:
                return self.close(CloseCode.TIMEOUT, "pushes were never acknowledged", now_ms)
            effects += self._resend_events(Resend(conv, first))
            entry[1], entry[2] = now_ms + limits.resend_ms * 2 ** (sent + 1), sent + 1
        return effects

    def _resend_events(self, resend: Resend, stored: Fetched | None = None) -> list[Effect]:
        events = self.chat.events_from(resend.conv, resend.first, stored)
        if isinstance(events, ReadPage):
            return [Fetch(events, resend)]
        return [Write(e) for e in events]

    def _sync(self, frame: Sync, stored: Fetched | None = None) -> list[Effect]:
        batch = self.chat.sync(self.user, frame, stored)
        if isinstance(batch, ReadPage):
            return [Fetch(batch, frame)]
        return [Write(batch)]

    def _submit_send(
        self, frame: Send, now_ms: int, stored: tuple[int, int] | NotAsked | None = NOT_ASKED
    ) -> list[Effect]:
        outcome = self.chat.submit(self.user, self.device, frame, now_ms, stored)
        if isinstance(outcome, FindCmid):
            self._held = []
            return [Fetch(outcome, frame)]
        return [Submit(outcome)]

    def close(self, code: int, reason: str, now_ms: int) -> list[Effect]:
        """Close the connection, decided here or by the server (slow consumer, replaced,
        kicked, shutdown, a frame the WebSocket layer refused, the client's own close).

        The session leaves presence at once; the client has `close_timeout_ms` to read what
        is in flight and answer. Returns the presence pushes this causes, then `Close`;
        nothing once closing already.
        """
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return []
        self.state = SessionState.CLOSING
        self._close_by_ms = now_ms + self.chat.limits.close_timeout_ms
        return [*self._leave_presence(now_ms), Close(code, reason)]

    def ended(self, now_ms: int) -> list[Effect]:
        """The connection is gone. Returns the presence pushes this causes, if the session
        had not left presence already."""
        self.state = SessionState.CLOSED
        return self._leave_presence(now_ms)

    def _leave_presence(self, now_ms: int) -> list[Effect]:
        if not self._in_presence:
            return []
        self._in_presence = False
        if not self.chat.presence.disconnect(self.user, self.device, self.id, now_ms):
            return []
        return self._presence_change()

    def _abused(self, now_ms: int) -> bool:
        window = self._abuse
        if window is None:
            window = self._abuse = deque()
        window.append(now_ms)
        while window[0] <= now_ms - ABUSE_WINDOW_MS:
            window.popleft()
        return len(window) > self.chat.limits.abuse_errors

    def _take_send_token(self, now_ms: int) -> None:
        limits = self.chat.limits
        elapsed = max(0, now_ms - self._refilled_ms)
        self._tokens = min(
            float(limits.send_burst), self._tokens + elapsed * limits.send_rate / 1000
        )
        self._refilled_ms = now_ms
        if self._tokens < 1:
            wait = math.ceil((1 - self._tokens) * 1000 / limits.send_rate)
            raise RateLimited(f"at most {limits.send_rate:g} sends a second", retry_ms=wait)
        self._tokens -= 1

    def _presence_change(self) -> list[Effect]:
        presence = self.chat.presence
        watchers = presence.watchers(self.user)
        if not watchers:
            return []
        frame = presence.state(self.user)
        return [Publish(Deliveries(self.user, frame, Audience(sessions=watchers)))]

    def _dispatch(self, frame: ClientFrame, now_ms: int) -> list[Effect]:
        if self.state is not SessionState.OPEN:
            assert isinstance(frame, Hello)
            return self._hello(frame, now_ms)
        chat = self.chat
        match frame:
            case Send():
                self._take_send_token(now_ms)
                return self._submit_send(frame, now_ms)
            case Read():
                return [Submit(self._write(frame, now_ms))]
            case Sync():
                return self._sync(frame)
            case Convs():
                return [Write(ConvList(convs=chat.summaries(self.user), id=frame.id))]
            case GroupInfo():
                return [Write(chat.group_info(self.user, frame))]
            case Recv():
                outcome = chat.receive(self.user, self.device, frame)
                self._covered(frame.conv, frame.seq, now_ms)  # resends stop now, not at commit
                return _ok(frame) if outcome is None else [Submit(outcome)]
            case Typing():
                notice = chat.typing(self.user, frame, now_ms)
                return _ok(frame) if notice is None else [Publish(notice), *_ok(frame)]
            case Ping():
                return [Write(Pong(ts=chat.clock.value, id=frame.id))]
            case Watch():
                states = chat.presence.watch(self.id, frame.users)
                return [*(Write(s) for s in states), *_ok(frame)]
            case Unwatch():
                chat.presence.unwatch(self.id, frame.users)
                return _ok(frame)
            case Hello():
                raise Invalid("this connection has already said hello")
            case _:
                return [Submit(self._write(frame, now_ms))]

    def _write(self, frame: Read | GroupCommand, now_ms: int) -> Outcome:
        outcome = self.chat.submit(self.user, self.device, frame, now_ms)
        assert not isinstance(outcome, FindCmid)  # only a send asks the store
        return outcome

    def _hello(self, frame: Hello, now_ms: int) -> list[Effect]:
        chat = self.chat
        user = auth.verify(frame.token, self.secret, now_ms=now_ms)
        seen_ts = None if frame.seen_ts is None else chat.clock.check(frame.seen_ts, "seen_ts")
        replaced, came_online = chat.presence.connect(user, frame.device, self.id, now_ms)
        if seen_ts is not None:
            chat.clock.observe(seen_ts)
        self.state = SessionState.OPEN
        self._in_presence = True
        self.user, self.device, self.recv_enabled = user, frame.device, frame.recv
        welcome = Welcome(
            user=user,
            device=frame.device,
            session=self.id,
            ts=chat.clock.value,
            heartbeat_ms=chat.limits.heartbeat_ms,
            limits=chat.limits.to_wire(),
            convs=chat.summaries(user),
            id=frame.id,
        )
        effects: list[Effect] = [Opened(replaced), Write(welcome)]
        if came_online:
            effects += self._presence_change()
        return effects


def _ok(frame: ClientFrame) -> list[Effect]:
    """The `ok` reply of a command with no other answer, if the client gave an id."""
    return [] if frame.id is None else [Write(Ok(id=frame.id))]
