"""One client connection: a reader and a writer around a Session, and the registry of them.

The reader (the connection's own task) feeds frames to the core's `Session` and carries out
the effects it returns; it never awaits the disk or another peer. A `Fetch` (history the
store must supply) runs as a task of the connection's nursery, in a worker thread, and its
answer goes back to the session; while a send waits on its lookup the session holds later
frames, and the reader stops reading until it is done. So does a connection with
`FETCHES_PER_CONNECTION` store reads in flight: a client that pipelines old syncs gets
them answered at the store's pace, and costs a bounded number of tasks. The writer drains the
outbox into the socket: pushes, replies and control frames, in one order. The session owns
every deadline; the connection keeps the one `due` the server's `Timers` call it back at.

Closing has one door, `Connection.close`: at the moment a close is decided the connection
leaves presence (the session) and the fan-out tables, nothing more is queued for it, and the
close frame goes out after what is already in flight. The client then has
`close_timeout_ms` to read it and answer; a connection waiting for that costs its socket and
the bytes in flight.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Protocol

import trio
from wsproto.events import Ping, Pong

from ..core import (
    Close,
    CloseCode,
    Drop,
    Error,
    Fetch,
    Internal,
    Opened,
    Publish,
    SendPing,
    SessionState,
    Submit,
    Write,
)
from .outbox import Outbox
from .websocket import ClientClose, Gone, ProtocolClose, preframe

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

    from ..core import Chat, Effect, ServerFrame, Session
    from ..core.history import StoreAnswer, StoreQuery
    from .committer import Committer
    from .fanout import Fanout
    from .metrics import Metrics
    from .timers import Timers
    from .websocket import WebSocket

log = logging.getLogger("imcore.conn")

#: Store reads one connection may have in flight before its reader waits for one to end.
FETCHES_PER_CONNECTION = 8


class Services(Protocol):
    """What a connection uses of its server (assembled by `serve`)."""

    chat: Chat
    committer: Committer
    connections: Connections
    fanout: Fanout
    metrics: Metrics
    timers: Timers

    def now_ms(self) -> int:
        """Wall-clock ms that follow trio's clock."""

    @property
    def read_store(self) -> Callable[[StoreQuery], Awaitable[StoreAnswer]]:
        """Carries out a query of the history store off the event loop."""


class Connection:
    """A live WebSocket and its protocol session.

    Args:
        server: what connections share.
        ws: the accepted WebSocket.
        session: the core's state for this connection.
        codec_index: which of the fan-out's codecs this connection speaks.
    """

    __slots__ = (
        "_cancel",
        "_fetching",
        "_nursery",
        "_resumed",
        "by_client",
        "close_code",
        "close_reason",
        "codec",
        "codec_index",
        "due",
        "outbox",
        "server",
        "session",
        "ws",
    )

    def __init__(self, server: Services, ws: WebSocket, session: Session, codec_index: int):
        self.server = server
        self.ws = ws
        self.session = session
        self.codec = session.codec
        self.codec_index = codec_index
        limits = server.chat.limits
        write_now = ws.write_now if ws.writes_now else None
        self.outbox = Outbox(limits.outbox_frames, limits.outbox_bytes, write_now)
        self.close_code: int | None = None  # set when a close is decided
        self.close_reason = ""
        self.by_client = False  # the client began the closing handshake
        self._cancel: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._resumed = trio.Event()  # set when the reader may go on (see `_read`)
        self._fetching = 0  # store reads in flight
        self.due = math.inf  # when the server's Timers call on_timer next

    @property
    def user(self) -> str:
        return self.session.user

    @property
    def device(self) -> str:
        return self.session.device

    def send(self, frame: ServerFrame | None) -> None:
        """Queue a reply for this connection alone."""
        if frame is not None:
            self._queue(preframe(self.codec.encode(frame)))
            metrics = self.server.metrics
            metrics.frame_out(frame)
            if isinstance(frame, Error):
                metrics.errors.labels(frame.code).inc()

    def push(self, frames: list[bytes], size: int, conv: str, seq: int, now_ms: int) -> None:
        """Frames from the fan-out (`Recipient`). Too many queued closes with 4008. (Once
        closing, the outbox takes nothing, and a resend noted then never comes due.)"""
        if not self.outbox.put(frames, size):
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
        elif seq and self.session.pushed(conv, seq, now_ms):
            self._schedule()  # a resend deadline: it may come before the others

    def _queue(self, frame: bytes) -> None:
        """A reply or control frame; one that does not fit closes with 4008, as a push."""
        if not self.outbox.put_nowait(frame):
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    def close(self, code: int, reason: str) -> None:
        """Close this connection with `code`; see the module. Does nothing once closing."""
        self._carry_out(self.session.close(code, reason, self.server.now_ms()))

    async def run(self) -> None:
        """Serve the connection until either side closes it."""
        server = self.server
        server.connections.add(self)
        server.metrics.connections.inc()
        opened = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                self._nursery = nursery
                nursery.start_soon(self._write)
                self._schedule()
                await self._read()
        finally:
            server.connections.remove(self)
            server.metrics.connections.dec()
            self.due = math.inf  # any deadline left in the heap is stale now
            # Nothing more is queued for, or written to, a connection that is gone: its
            # socket is closed next and its descriptor may be reused.
            self.outbox.abandon()
            server.fanout.disconnect(self)
            self._carry_out(self.session.ended(server.now_ms()))
            self._log_close(trio.current_time() - opened)

    def _log_close(self, duration_s: float) -> None:
        code = self.close_code
        closed_by = "by_client" if code is None or self.by_client else str(code)
        self.server.metrics.closes.labels(closed_by).inc()
        fields = {
            "session": self.session.id,
            "user": self.user or None,
            "device": self.device or None,
            "code": closed_by,
            "reason": self.close_reason if closed_by != "by_client" else None,
            "duration_ms": int(duration_s * 1000),
        }
        log.info("close", extra={"fields": fields})

    async def _read(self) -> None:
        session, server, ws = self.session, self.server, self.ws
        while True:
            for received in await ws.receive():
                if isinstance(received, (str, bytes)):
                    if self.close_code is not None:
                        continue  # closing: no frame is handled any more
                    try:
                        effects = session.handle(received, server.now_ms())
                        server.metrics.frame_in(session.last_op)
                    except Exception:
                        log.exception("unexpected failure handling a frame")
                        exc = Internal("the server failed on this frame; it has been logged")
                        effects = [Write(Error.from_exc(exc))]
                    self._carry_out(effects)
                elif isinstance(received, Ping):
                    self._queue(ws.pong(received))
                elif isinstance(received, Pong):
                    session.heard(server.now_ms())
                elif isinstance(received, ClientClose):
                    self.by_client = self.close_code is None
                    self.close(received.code, received.reason)  # the answer, then hang up
                    return
                elif isinstance(received, ProtocolClose):
                    # A frame we will not take: our close, then read on for the answer.
                    self.close(received.code, received.reason)
                elif isinstance(received, Gone):
                    self._stop()
                    return
            while session.holding or self._fetching >= FETCHES_PER_CONNECTION:
                self._resumed = trio.Event()
                await self._resumed.wait()

    async def _write(self) -> None:
        outbox, ws = self.outbox, self.ws
        try:
            while batch := await outbox.get_batch():  # empty: closed, and all of it written
                self.server.metrics.outbox_batch.observe(len(batch))
                await ws.send(batch[0] if len(batch) == 1 else b"".join(batch))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._stop()
            return
        if ws.closed:  # that was the answer to the client's close
            self._stop()
        # Otherwise the reader waits for the client's answer, until the close deadline.

    def _schedule(self) -> None:
        """Tell the timers this connection's next deadline, if it moved earlier."""
        due_ms = self.session.next_deadline_ms()
        if due_ms is None:
            return
        due = trio.current_time() + (due_ms - self.server.now_ms()) / 1000
        if due < self.due:
            self.server.timers.schedule(self, due)

    def on_timer(self) -> None:
        """The deadline came: the session says what it means."""
        if self.session.state is not SessionState.CLOSED:
            self._carry_out(self.session.on_deadline(self.server.now_ms()))
            self._schedule()

    def _stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def _carry_out(self, effects: list[Effect]) -> None:
        server = self.server
        for effect in effects:
            match effect:
                case Write(frame):
                    self.send(frame)
                case Submit(outcome):
                    server.committer.submit_nowait(outcome, self.send)
                case Publish(deliveries):
                    server.fanout.publish(deliveries)
                case Opened(replaced):
                    server.fanout.connect(self, server.chat.convs_of(self.user))
                    fields = {
                        "session": self.session.id,
                        "user": self.user,
                        "device": self.device,
                        "encoding": self.codec.encoding.value,
                    }
                    log.info("connect", extra={"fields": fields})
                    old = server.connections.get(replaced) if replaced is not None else None
                    if old is not None:
                        old.close(CloseCode.REPLACED, "replaced")
                case Close(code, reason):
                    self._closing(code, reason)
                case SendPing():
                    self._queue(self.ws.ping())
                case Drop():
                    self._stop()
                case Fetch():
                    if self._nursery is not None:
                        self._nursery.start_soon(self._fetch, effect)

    async def _fetch(self, fetch: Fetch) -> None:
        """Read from the store, then let the session finish the request."""
        session = self.session
        self._fetching += 1
        try:
            answer = await self.server.read_store(fetch.query)
        except Exception as exc:
            fields = {"query": repr(fetch.query), "error": str(exc)}
            log.error("history store read failed", extra={"fields": fields})
            effects = session.fetch_failed(fetch, self.server.now_ms())
        else:
            effects = session.fetched(fetch, answer, self.server.now_ms())
        finally:
            self._fetching -= 1
        self._carry_out(effects)
        self._resumed.set()  # the reader checks again whether it may go on

    def _closing(self, code: int, reason: str) -> None:
        """The transport's part of a close the session has made."""
        self.close_code, self.close_reason = code, reason
        self.server.fanout.disconnect(self)
        # The close frame follows what is in flight. A slow consumer's queue is what it
        # could not take: only the rest of a frame already partly on the wire stays.
        keep = code != CloseCode.SLOW_CONSUMER
        self.outbox.close(self.ws.close_frame(code, reason), keep_queued=keep)
        self._schedule()  # the close deadline


class Connections:
    """The live connections of one server, by session id: the one registry of them. Who is
    online as which user and device is the core's (`Presence`); this maps its session ids
    to connections.

    Args:
        sessions_of: the live session ids of some users (`Presence.sessions`).
    """

    __slots__ = ("_by_session", "sessions_of")

    def __init__(self, sessions_of: Callable[[Iterable[str]], list[str]]) -> None:
        self._by_session: dict[str, Connection] = {}
        self.sessions_of = sessions_of

    def __len__(self) -> int:
        return len(self._by_session)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_session.values()))

    def add(self, conn: Connection) -> None:
        self._by_session[conn.session.id] = conn

    def remove(self, conn: Connection) -> None:
        self._by_session.pop(conn.session.id, None)

    def get(self, session: str) -> Connection | None:
        return self._by_session.get(session)

    def of_sessions(self, sessions: Iterable[str]) -> list[Connection]:
        by_session = self._by_session
        return [c for s in sessions if (c := by_session.get(s)) is not None]

    def of_users(self, users: Iterable[str]) -> list[Connection]:
        """The live, authenticated connections of `users` (not those being closed: they
        left presence when the close was decided)."""
        return self.of_sessions(self.sessions_of(users))
