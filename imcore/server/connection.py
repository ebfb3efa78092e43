"""One client connection: a reader and a writer around a Session.

The reader (the connection's own task) feeds frames to the core's `Session` and carries out
the effects it returns; it never awaits the disk or another peer. The writer drains the
outbox into the socket: pushes, replies and control frames, in one order. Deadlines (hello
timeout, heartbeat, resend) come from the server's one `Timers` task. All protocol
decisions are the core's; this module only moves bytes and time.
"""

from __future__ import annotations

import contextlib
import logging
import math
from functools import partial
from typing import TYPE_CHECKING

import trio
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Ping, Pong
from wsproto.frame_protocol import CloseReason

from ..core import (
    Close,
    CloseCode,
    Error,
    Internal,
    Opened,
    Publish,
    SendPing,
    Session,
    Submit,
    Write,
)
from .outbox import Outbox
from .websocket import preframe

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core import Chat, Codec, Effect, ServerFrame
    from .committer import Committer
    from .fanout import Fanout
    from .metrics import Metrics
    from .timers import Timers
    from .websocket import WebSocket

log = logging.getLogger("imcore.conn")

#: How long a connection being closed may take to drain what is queued and the close frame.
CLOSE_TIMEOUT_S = 10.0


class Connection:
    """A live WebSocket and its protocol session.

    Args:
        ws: the accepted WebSocket.
        session: the core's state for this connection.
        codec_index: which of the fan-out's codecs this connection speaks.
    """

    __slots__ = (
        "_cancel",
        "_hello_at",
        "_next_beat",
        "attached",
        "by_client",
        "closed",
        "codec",
        "codec_index",
        "due",
        "hub",
        "outbox",
        "session",
        "ws",
    )

    def __init__(self, hub: Hub, ws: WebSocket, session: Session, codec_index: int):
        self.hub = hub
        self.ws = ws
        self.session = session
        self.codec = session.codec
        self.codec_index = codec_index
        limits = hub.chat.limits
        write_now = ws.write_now if ws.writes_now else None
        self.outbox = Outbox(limits.outbox_frames, limits.outbox_bytes, write_now)
        self.closed = False
        self.by_client = False  # the client started the closing handshake
        self.attached: set[str] = set()  # conversations whose fan-out table holds it
        self._cancel: trio.CancelScope | None = None
        now = trio.current_time()
        self._hello_at = now + limits.hello_timeout_ms / 1000
        self._next_beat = now + limits.heartbeat_ms / 1000
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
            self.outbox.put_nowait(preframe(self.codec.encode(frame)))
            metrics = self.hub.metrics
            metrics.frame_out(frame)
            if isinstance(frame, Error):
                metrics.errors.labels(frame.code).inc()

    async def run(self) -> None:
        """Serve the connection until either side closes it."""
        hub = self.hub
        hub.connections.add(self)
        hub.metrics.connections.inc()
        opened = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                self.outbox.on_close = partial(self._start_close_deadline, nursery)
                nursery.start_soon(self._write)
                self._schedule()
                await self._read()
        finally:
            hub.connections.discard(self)
            hub.metrics.connections.dec()
            self.closed = True
            self.due = math.inf  # any deadline left in the heap is stale now
            code = self.outbox.close_code
            closed_by = str(int(code)) if code is not None and not self.by_client else "by_client"
            hub.metrics.closes.labels(closed_by).inc()
            log.info(
                "close",
                extra={
                    "fields": {
                        "session": self.session.id,
                        "user": self.user or None,
                        "device": self.device or None,
                        "code": closed_by,
                        "reason": self.outbox.close_reason if closed_by != "by_client" else None,
                        "duration_ms": int((trio.current_time() - opened) * 1000),
                    }
                },
            )
            # Nothing more is queued for, or written to, a connection that is gone: its
            # socket is closed next and its descriptor may be reused.
            self.outbox.on_close = None
            self.outbox.write_now = None
            self.outbox.close_nowait(CloseCode.GOING_AWAY, "closed", flush=False)
            hub.fanout.disconnect(self)
            self._carry_out(self.session.close(hub.now_ms()))

    async def _read(self) -> None:
        session, hub, ws, outbox = self.session, self.hub, self.ws, self.outbox
        while True:
            for received in await ws.receive():
                if isinstance(received, (str, bytes)):
                    if outbox.close_code is not None:
                        continue  # closing: no frame is handled any more
                    try:
                        effects = session.handle(received, hub.now_ms())
                        hub.metrics.frame_in(session.last_op)
                    except Exception:
                        log.exception("unexpected failure handling a frame")
                        exc = Internal("the server failed on this frame; it has been logged")
                        effects = [Write(Error.from_exc(exc))]
                    self._carry_out(effects)
                elif isinstance(received, Ping):
                    outbox.put_nowait(ws.pong(received))
                elif isinstance(received, Pong):
                    session.heard(hub.now_ms())
                elif isinstance(received, CloseConnection):
                    if (
                        received.code == CloseReason.ABNORMAL_CLOSURE
                        or ws.closed
                        or outbox.close_code is not None
                    ):
                        self._stop()  # lost, or the answer to our close: done
                        return
                    if ws.protocol.state is ConnectionState.REMOTE_CLOSING:
                        # The client's close: the writer answers it, nothing more is read.
                        self.by_client = True
                        outbox.close_nowait(received.code, received.reason or "", flush=False)
                        return
                    # A frame we will not take (1002, 1007, 1009): our close, then read on
                    # until the client answers it.
                    outbox.close_nowait(received.code, received.reason or "", flush=False)

    async def _write(self) -> None:
        outbox, ws = self.outbox, self.ws
        try:
            while True:
                batch = await outbox.get_batch()
                if batch:  # everything queued since the last wake-up, in one write
                    self.hub.metrics.outbox_batch.observe(len(batch))
                    await ws.send(batch[0] if len(batch) == 1 else b"".join(batch))
                if outbox.close_code is not None:
                    frame = ws.close_frame(outbox.close_code, outbox.close_reason)
                    if frame:
                        await ws.send(frame)
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._stop()
            return
        if ws.closed:  # that was the answer to the client's close
            self._stop()
        # Otherwise the reader waits for the client's answer, within the close deadline.

    def _schedule(self) -> None:
        """Tell the Timers this connection's next deadline, if it moved earlier."""
        hub = self.hub
        due = self._next_beat
        if self._hello_at < due:
            due = self._hello_at
        resend_ms = self.session.due_ms()
        if resend_ms is not None:
            due = min(due, trio.current_time() + (resend_ms - hub.now_ms()) / 1000)
        if due < self.due:
            hub.timers.schedule(self, due)

    def wake(self) -> None:
        """A resend deadline was set: it may come before the next heartbeat."""
        if not self.closed:
            self._schedule()

    def on_timer(self) -> None:
        """One of this connection's deadlines came: the session says what it means."""
        if self.closed:
            return
        session, hub = self.session, self.hub
        now = trio.current_time()
        if now >= self._hello_at:
            self._hello_at = math.inf
            self._carry_out(session.expire())
        if now >= self._next_beat:
            self._next_beat += hub.chat.limits.heartbeat_ms / 1000
            self._carry_out(session.tick(hub.now_ms()))
        self._carry_out(session.resend(hub.now_ms()))
        self._schedule()

    def _start_close_deadline(self, nursery: trio.Nursery) -> None:
        # RuntimeError: the connection's tasks have all ended, so it is closing already.
        with contextlib.suppress(RuntimeError):
            nursery.start_soon(self._close_deadline)

    async def _close_deadline(self) -> None:
        """A close was decided: a client that does not read cannot even get the close
        frame, so after a while the connection is dropped without it."""
        await trio.sleep(CLOSE_TIMEOUT_S)
        self._stop()

    def _stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def _carry_out(self, effects: list[Effect]) -> None:
        hub = self.hub
        for effect in effects:
            match effect:
                case Write(frame):
                    self.send(frame)
                case Submit(outcome):
                    hub.committer.submit_nowait(outcome, self)
                case Publish(deliveries):
                    hub.fanout.publish(deliveries)
                case Opened(replaced):
                    old = hub.fanout.connect(self, hub.chat.convs_of(self.user))
                    fields = {
                        "session": self.session.id,
                        "user": self.user,
                        "device": self.device,
                        "encoding": self.codec.encoding.value,
                    }
                    log.info("connect", extra={"fields": fields})
                    if replaced is not None and old is not None:
                        old.outbox.close_nowait(CloseCode.REPLACED, "replaced", flush=False)
                case Close(code, reason):
                    self.outbox.close_nowait(code, reason)
                case SendPing():
                    self.outbox.put_nowait(self.ws.ping())


class Hub:
    """What every connection of one server shares."""

    __slots__ = (
        "chat",
        "codecs",
        "committer",
        "connections",
        "fanout",
        "max_connections",
        "metrics",
        "now_ms",
        "secret",
        "timers",
    )

    def __init__(
        self,
        *,
        chat: Chat,
        codecs: list[Codec],
        committer: Committer,
        fanout: Fanout,
        metrics: Metrics,
        secret: str,
        timers: Timers,
        now_ms: Callable[[], int],
    ) -> None:
        self.chat = chat
        self.codecs = codecs
        self.committer = committer
        self.fanout = fanout
        self.metrics = metrics
        self.secret = secret
        self.timers = timers
        self.now_ms = now_ms
        self.connections: set[Connection] = set()  # every live one, said hello or not
