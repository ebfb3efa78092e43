"""serve(): the trio shell around the core: committer, fan-out shards and the accept loop.

Prints `imcore listening on ws://HOST:PORT/ws` once it accepts connections (spec §11).
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import trio
from trio_websocket import WebSocketRequest, WebSocketServer

from ..core import Chat, Codec, Encoding, Session
from .committer import Committer, MemoryLog
from .connection import Connection, Hub
from .fanout import Fanout
from .secret import load_or_create_secret

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..config import Config

log = logging.getLogger("imcore")

#: Encodings in the order of `Hub.codecs`; a connection's `codec_index` points here.
ENCODINGS = (Encoding.CBOR, Encoding.JSON)
WS_PATH = "/ws"  # spec §1


@dataclass(frozen=True, slots=True)
class RunningServer:
    """What `serve` reports once it accepts connections."""

    host: str
    port: int


def choose_encoding(offered: Sequence[str]) -> Encoding | None:
    """The first subprotocol offered that we speak; None (plain JSON) if none (spec §1)."""
    for name in offered:
        if name in ENCODINGS:
            return Encoding(name)
    return None


async def serve(
    config: Config,
    *,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]] | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until cancelled.

    Args:
        config: the settings.
        listeners: listeners to serve on instead of a TCP port (tests pass in-memory ones).
        task_status: `started(RunningServer)` once connections are accepted.
    """
    limits = config.limits
    secret = config.auth_secret or load_or_create_secret(config.data_dir)
    chat = Chat(limits)
    codecs = [Codec(e, limits) for e in ENCODINGS]
    fanout = Fanout(codecs, config.shards)
    committer = Committer(chat, fanout, MemoryLog())
    # Wall-clock ms that follow trio's clock, so tests on a MockClock control time.
    offset = time.time() - trio.current_time()

    def now_ms() -> int:
        return int((trio.current_time() + offset) * 1000)

    hub = Hub(
        chat=chat,
        codecs=codecs,
        committer=committer,
        fanout=fanout,
        secret=secret,
        now_ms=now_ms,
        outbox_frames=config.outbox_frames,
        outbox_bytes=config.outbox_bytes,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(fanout.run)
        await nursery.start(committer.run)
        if listeners is None:
            listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        server = WebSocketServer(
            partial(_handle, hub),
            listeners,  # type: ignore[arg-type]
            max_message_size=limits.max_frame,
        )
        await nursery.start(server.run)
        port = _port(listeners, config.port)
        print(f"imcore listening on ws://{config.host}:{port}{WS_PATH}", flush=True)
        log.info("listening host=%s port=%d", config.host, port)
        task_status.started(RunningServer(config.host, port))


def _port(listeners: Sequence[trio.abc.Listener[trio.abc.Stream]], default: int) -> int:
    for listener in listeners:
        if isinstance(listener, trio.SocketListener):
            port: int = listener.socket.getsockname()[1]
            return port
    return default


async def _handle(hub: Hub, request: WebSocketRequest) -> None:
    # An exception escaping here would reach trio-websocket's accept loop and stop the
    # whole server, so every failure ends with this one connection.
    try:
        if request.path.partition("?")[0] != WS_PATH:
            await request.reject(404, body=b"not found: imcore serves WebSocket at /ws\n")
            return
        encoding = choose_encoding(request.proposed_subprotocols)
        ws = await request.accept(subprotocol=encoding)
        index = ENCODINGS.index(encoding or Encoding.JSON)
        session = Session(
            hub.chat,
            hub.codecs[index],
            secret=hub.secret,
            session_id=secrets.token_hex(8),
            now_ms=hub.now_ms(),
        )
        await Connection(hub, ws, session, index).run()
    except Exception:
        log.exception("connection failed")
