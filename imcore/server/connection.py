"""One client connection: a nursery with a reader, a writer and a watchdog around a Session.

The reader feeds frames to the core's `Session` and carries out the effects it returns; it
never awaits the disk or another peer. The writer drains the outbox into the socket. All
protocol decisions are the core's; this module only moves bytes and time.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed

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
from .wire import RawWriter, preframe

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio_websocket import WebSocketConnection

    from ..core import Chat, Codec, Effect, ServerFrame
    from .committer import Committer
    from .fanout import Fanout
    from .metrics import Metrics

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
        "_wakeup",
        "attached",
        "closed",
        "codec",
        "codec_index",
        "hub",
        "outbox",
        "session",
        "ws",
    )

    def __init__(self, hub: Hub, ws: WebSocketConnection, session: Session, codec_index: int):
        self.hub = hub
        self.ws = ws
        self.session = session
        self.codec = session.codec
        self.codec_index = codec_index
        limits = hub.chat.limits
        self.outbox = Outbox(limits.outbox_frames, limits.outbox_bytes)
        self.closed = False
        self.attached: set[str] = set()  # conversations whose fan-out table holds it
        self._cancel: trio.CancelScope | None = None
        self._wakeup = trio.Event()

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
                nursery.start_soon(self._read)
                nursery.start_soon(self._write)
                nursery.start_soon(self._watchdog, nursery)
        finally:
            hub.connections.discard(self)
            hub.metrics.connections.dec()
            self.closed = True
            code = self.outbox.close_code
            closed_by = str(int(code)) if code is not None else "by_client"
            hub.metrics.closes.labels(closed_by).inc()
            log.info(
                "close",
                extra={
                    "fields": {
                        "session": self.session.id,
                        "user": self.user or None,
                        "device": self.device or None,
                        "code": closed_by,
                        "reason": self.outbox.close_reason if code is not None else None,
                        "duration_ms": int((trio.current_time() - opened) * 1000),
                    }
                },
            )
            # Nothing more is queued for a connection that is gone.
            self.outbox.on_close = None
            self.outbox.close_nowait(CloseCode.GOING_AWAY, "closed", flush=False)
            hub.fanout.disconnect(self)
            self._carry_out(self.session.close(hub.now_ms()))
            if code is not None and not self.ws.closed:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await self.ws.aclose(code, self.outbox.close_reason)

    async def _read(self) -> None:
        session, hub = self.session, self.hub
        try:
            while True:
                data = await self.ws.get_message()
                try:
                    effects = session.handle(data, hub.now_ms())
                    hub.metrics.frame_in(session.last_op)
                except Exception:
                    log.exception("unexpected failure handling a frame")
                    exc = Internal("the server failed on this frame; it has been logged")
                    effects = [Write(Error.from_exc(exc))]
                self._carry_out(effects)
        except ConnectionClosed:
            pass
        self._stop()

    async def _write(self) -> None:
        outbox, ws = self.outbox, self.ws
        writer = RawWriter(ws)
        try:
            while True:
                batch = await outbox.get_batch()
                if batch:  # everything queued since the last wake-up, in one write
                    self.hub.metrics.outbox_batch.observe(len(batch))
                    await writer.write(batch[0] if len(batch) == 1 else b"".join(batch))
                if outbox.close_code is not None:
                    await ws.aclose(outbox.close_code, outbox.close_reason)
                    break
        except ConnectionClosed:
            pass
        self._stop()

    def wake(self) -> None:
        """A resend deadline was set: let the watchdog look at its timers again."""
        self._wakeup.set()

    async def _watchdog(self, nursery: trio.Nursery) -> None:
        """The hello timeout, a heartbeat every `heartbeat_ms` and resend deadlines; the
        session decides what each one means."""
        limits, session, hub = self.hub.chat.limits, self.session, self.hub
        start = trio.current_time()
        hello_at: float | None = start + limits.hello_timeout_ms / 1000
        interval = limits.heartbeat_ms / 1000
        next_beat = start + interval
        while True:
            due_ms = session.due_ms()
            targets = [next_beat]
            if hello_at is not None:
                targets.append(hello_at)
            if due_ms is not None:
                targets.append(trio.current_time() + (due_ms - hub.now_ms()) / 1000)
            with trio.move_on_at(min(targets)):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            now = trio.current_time()
            if hello_at is not None and now >= hello_at:
                hello_at = None
                self._carry_out(session.expire())
            if now >= next_beat:
                next_beat += interval
                for effect in session.tick(hub.now_ms()):
                    if isinstance(effect, SendPing):
                        nursery.start_soon(self._ping)
                    else:
                        self._carry_out([effect])
            self._carry_out(session.resend(hub.now_ms()))

    def _start_close_deadline(self, nursery: trio.Nursery) -> None:
        # RuntimeError: the connection's tasks have all ended, so it is closing already.
        with contextlib.suppress(RuntimeError):
            nursery.start_soon(self._close_deadline)

    async def _close_deadline(self) -> None:
        """A close was decided: a client that does not read cannot even get the close
        frame, so after a while the connection is dropped without it."""
        await trio.sleep(CLOSE_TIMEOUT_S)
        self._stop()

    async def _ping(self) -> None:
        try:
            await self.ws.ping()
        except ConnectionClosed:
            return
        self.session.heard(self.hub.now_ms())

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
                case SendPing():  # pragma: no cover - the watchdog sends pings itself
                    pass


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
        now_ms: Callable[[], int],
    ) -> None:
        self.chat = chat
        self.codecs = codecs
        self.committer = committer
        self.fanout = fanout
        self.metrics = metrics
        self.secret = secret
        self.now_ms = now_ms
        self.connections: set[Connection] = set()  # every live one, said hello or not
