"""Session, one connection's protocol state: hello, auth, rate and abuse limits, dispatch.

Pure: bytes and `now_ms` in, a list of effects out; the server carries the effects out.

Theory of operation
-------------------

    AWAITING_HELLO --hello ok--> OPEN --close()--> CLOSED
          |
          +--bad token--> error unauthorized, Close(4001)      (spec §3)
          +--too many devices--> error limit, Close(4029)      (spec §3)

Before `welcome`, any frame but `hello` is answered `unauthorized` (spec §3). In OPEN,
reads (`sync`, `convs`, `group.info`, `ping`) are answered at once with `Write`; writes
(`send`, `read`, `group.*`) become `Submit(outcome)`, whose reply the server releases only
after the outcome's record is committed (spec §7); pushes become `Publish`.

This is the one place where `ImcoreError` becomes an `error` frame (h2's pattern: raise
anywhere, convert once). Errors of the abuse kinds are counted over a sliding minute; more
than `abuse_errors` of them close the connection with 4002 (spec §10).

Sends are rate limited per connection by a token bucket of `send_burst` tokens refilled at
`send_rate` a second (spec §10); an empty bucket answers `rate_limited` with the wait.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from . import auth
from .chat import Audience, Chat, Deliveries, Outcome
from .errors import ABUSE_CODES, CloseCode, ImcoreError, Invalid, Limit, RateLimited, Unauthorized
from .frames import (
    ClientFrame,
    ConvList,
    Convs,
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

if TYPE_CHECKING:
    from .codec import Codec

ABUSE_WINDOW_MS = 60_000  # spec §10: "in a minute"


class SessionState(Enum):
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"
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
class Close:
    """Close the connection with `code` once the frames written before are sent."""

    code: CloseCode
    reason: str


Effect = Write | Submit | Publish | Opened | Close


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
        "_refilled_ms",
        "_tokens",
        "chat",
        "codec",
        "device",
        "id",
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
        self._abuse: deque[int] = deque()

    def handle(self, data: bytes | str, now_ms: int) -> list[Effect]:
        """Take one WebSocket message from the client.

        Returns:
            The effects to carry out, in order.
        """
        frame: ClientFrame | None = None
        try:
            frame = self.codec.decode(data)
            return self._dispatch(frame, now_ms)
        except ImcoreError as exc:
            frame_id = frame.id if frame is not None else exc.frame_id
            effects: list[Effect] = [Write(ErrorFrame.from_exc(exc, id=frame_id))]
            if isinstance(frame, Hello) and self.state is SessionState.AWAITING_HELLO:
                if isinstance(exc, Unauthorized):
                    effects.append(Close(CloseCode.UNAUTHORIZED, "unauthorized"))
                elif isinstance(exc, Limit):
                    effects.append(Close(CloseCode.LIMIT, "too many devices"))
            if exc.code in ABUSE_CODES and self._abused(now_ms):
                effects.append(Close(CloseCode.ABUSE, "too many bad frames"))
            return effects

    def close(self, now_ms: int) -> list[Effect]:
        """The connection ended. Returns the presence pushes this causes."""
        was_open = self.state is SessionState.OPEN
        self.state = SessionState.CLOSED
        if not was_open:
            return []
        presence = self.chat.presence
        if not presence.disconnect(self.user, self.device, self.id, now_ms):
            return []
        return self._presence_change()

    def _abused(self, now_ms: int) -> bool:
        window = self._abuse
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
            if not isinstance(frame, Hello):
                raise Unauthorized("say hello first")
            return self._hello(frame, now_ms)
        chat = self.chat
        ok: list[Effect] = [] if frame.id is None else [Write(Ok(id=frame.id))]
        match frame:
            case Send():
                self._take_send_token(now_ms)
                return [Submit(chat.submit(self.user, self.device, frame, now_ms))]
            case Read():
                return [Submit(chat.submit(self.user, self.device, frame, now_ms))]
            case Sync():
                return [Write(chat.sync(self.user, frame))]
            case Convs():
                return [Write(ConvList(convs=chat.summaries(self.user), id=frame.id))]
            case GroupInfo():
                return [Write(chat.group_info(self.user, frame))]
            case Recv():
                delivered = chat.receive(self.user, frame)
                return ok if delivered is None else [Publish(delivered), *ok]
            case Typing():
                notice = chat.typing(self.user, frame, now_ms)
                return ok if notice is None else [Publish(notice), *ok]
            case Ping():
                return [Write(Pong(ts=chat.clock.value, id=frame.id))]
            case Watch():
                states = chat.presence.watch(self.id, frame.users)
                return [*(Write(s) for s in states), *ok]
            case Unwatch():
                chat.presence.unwatch(self.id, frame.users)
                return ok
            case Hello():
                raise Invalid("this connection has already said hello")
            case _:
                return [Submit(chat.submit(self.user, self.device, frame, now_ms))]

    def _hello(self, frame: Hello, now_ms: int) -> list[Effect]:
        chat = self.chat
        user = auth.verify(frame.token, self.secret, now_ms=now_ms)
        seen_ts = None if frame.seen_ts is None else chat.clock.check(frame.seen_ts, "seen_ts")
        replaced, came_online = chat.presence.connect(user, frame.device, self.id, now_ms)
        if seen_ts is not None:
            chat.clock.observe(seen_ts)
        self.state = SessionState.OPEN
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
