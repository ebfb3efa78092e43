"""The admin HTTP port: Starlette routes served by hypercorn's trio worker in the server's
own event loop; the views themselves are `imcore.admin_api`'s. Every endpoint but
/healthz wants `Authorization: Bearer <token>` with claim `admin: true`.

Must not block the loop: old history (`/conversations/{id}`) is read from the store in a
worker thread (`read_store`), and the store's file sizes (`/status`, `/metrics`) too
(`AdminState.refresh`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import __version__, admin_api
from ..core import CloseCode, auth
from ..core.errors import Unauthorized
from ..core.history import ReadPage

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from ..core import Chat, Event
    from ..core.history import StoreAnswer, StoreQuery
    from .checkpoint import Checkpoint
    from .connection import Connection, Connections
    from .fanout import Fanout
    from .metrics import Metrics
    from .snapshots import Snapshotter
    from .store import HistoryStore
    from .wal import Wal

Handler: TypeAlias = Callable[["Request"], Awaitable[JSONResponse]]
MAX_PAGE = 1000


@dataclass(slots=True)
class AdminState:
    """What the admin endpoints read and act on."""

    chat: Chat
    connections: Connections
    fanout: Fanout
    metrics: Metrics
    secret: str
    now_ms: Callable[[], int]
    wal: Wal
    snapshotter: Snapshotter
    fsync: str
    store: HistoryStore
    checkpoint: Checkpoint
    #: carries out a query of the core on the store, off the loop (`serve.read_store`)
    read_store: Callable[[StoreQuery], Awaitable[StoreAnswer]]
    started: float = field(default_factory=time.monotonic)
    store_bytes: int = 0  # as of the last `refresh`

    async def refresh(self) -> None:
        """Read the figures that cost a system call (the store's file sizes), in a worker
        thread: before /status and each scrape of /metrics."""
        self.store_bytes = await trio.to_thread.run_sync(self.store.size_bytes)

    def history(self) -> admin_api.HistoryFigures:
        return admin_api.history_figures(
            self.chat,
            store_bytes=self.store_bytes,
            store_lsn=self.store.lsn,
            checkpoint_lag=self.checkpoint.lag,
        )

    async def last_events(self, conv: str, last: int) -> list[Event]:
        """The newest `last` events of `conv`, the older ones read from the store."""
        stored = None
        while True:
            found = admin_api.last_events(self.chat, conv, last, stored)
            if not isinstance(found, ReadPage):
                return found
            page = await self.read_store(found)
            assert isinstance(page, list)
            stored = (found, page)

    def figures(self) -> admin_api.ServerFigures:
        metrics = self.metrics
        return admin_api.ServerFigures(
            version=__version__,
            uptime_s=round(time.monotonic() - self.started, 3),
            connections=len(self.connections),
            fsync=self.fsync,
            wal_lsn=self.wal.durable_lsn,
            wal_bytes=self.wal.bytes_written,
            last_snapshot_lsn=self.snapshotter.last_lsn,
            last_snapshot_s=round(self.snapshotter.last_duration_s, 3),
            fsync_ms=metrics.write_percentiles_ms(),
            sends_per_s=round(metrics.rates["sends"], 1),
            deliveries_per_s=round(metrics.rates["deliveries"], 1),
            loop_lag_ms=round(
                (metrics.registry.get_sample_value("imcore_event_loop_lag_seconds") or 0) * 1000, 3
            ),
            read_only=self.chat.read_only,
        )


def _authorized(request_headers: dict[str, str], state: AdminState) -> bool:
    header = request_headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    try:
        auth.verify_admin(token, state.secret, now_ms=state.now_ms())
    except Unauthorized:
        return False
    return True


def _guard(state: AdminState, handler: Handler) -> Handler:
    async def guarded(request: Request) -> JSONResponse:
        if not _authorized(dict(request.headers), state):
            return JSONResponse({"error": "unauthorized: an admin token is required"}, 401)
        return await handler(request)

    return guarded


class _GuardedASGI:
    """The same check in front of an ASGI app (prometheus-client's /metrics)."""

    def __init__(self, state: AdminState, app: ASGIApp) -> None:
        self.state, self.app = state, app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        if scope["type"] == "http" and not _authorized(headers, self.state):
            response = JSONResponse({"error": "unauthorized: an admin token is required"}, 401)
            await response(scope, receive, send)
            return
        await self.state.refresh()
        await self.app(scope, receive, send)


def build_app(state: AdminState) -> Starlette:
    chat, connections = state.chat, state.connections

    async def healthz(request: Request) -> JSONResponse:
        if chat.read_only:
            return JSONResponse(
                {"ok": False, "reason": "read-only: the log cannot be written"}, 503
            )
        return JSONResponse({"ok": True})

    async def status(request: Request) -> JSONResponse:
        await state.refresh()
        return JSONResponse(admin_api.status(chat, state.figures(), state.history()))

    async def conns(request: Request) -> JSONResponse:
        offset = _int(request, "offset", 0)
        limit = min(_int(request, "limit", 100), MAX_PAGE)
        every = sorted(connections, key=lambda c: c.session.id)
        page = [_conn_view(c, state.fanout) for c in every[offset : offset + limit]]
        return JSONResponse({"total": len(every), "offset": offset, "conns": page})

    async def user(request: Request) -> JSONResponse:
        user_id = request.path_params["user"]
        devices = [_conn_view(c, state.fanout) for c in connections.of_users((user_id,))]
        return JSONResponse(admin_api.user(chat, user_id, devices))

    async def conversation(request: Request) -> JSONResponse:
        conv = request.path_params["conv"]
        events = await state.last_events(conv, min(_int(request, "last", 20), MAX_PAGE))
        view = admin_api.conversation(chat, conv, events)
        if view is None:
            return JSONResponse({"error": "no such conversation"}, 404)
        return JSONResponse(view)

    async def kick(request: Request) -> JSONResponse:
        conns = connections.of_users((request.path_params["user"],))
        for conn in conns:
            conn.close(CloseCode.REPLACED, "kicked by an operator")
        return JSONResponse({"kicked": len(conns)})

    async def snapshot(request: Request) -> JSONResponse:
        path = await state.snapshotter.take()
        return JSONResponse({"lsn": state.snapshotter.last_lsn, "written": path is not None})

    routes = [
        Route("/healthz", healthz),
        Route("/status", _guard(state, status)),
        Route("/conns", _guard(state, conns)),
        Route("/users/{user}", _guard(state, user)),
        Route("/conversations/{conv}", _guard(state, conversation)),
        Route("/kick/{user}", _guard(state, kick), methods=["POST"]),
        Route("/snapshot", _guard(state, snapshot), methods=["POST"]),
        # A Route, not a Mount: a Mount answers /metrics with a 307 to /metrics/.
        Route(
            "/metrics",
            _GuardedASGI(state, make_asgi_app(registry=state.metrics.registry)),
            methods=["GET"],
        ),
    ]
    return Starlette(routes=routes)


def _int(request: Request, name: str, default: int) -> int:
    try:
        return max(0, int(request.query_params.get(name, default)))
    except ValueError:
        return default


def _conn_view(conn: Connection, fanout: Fanout) -> dict[str, Any]:
    session = conn.session
    return {
        "session": session.id,
        "user": session.user or None,
        "device": session.device or None,
        "state": session.state.value,
        "encoding": conn.codec.encoding.value,
        "outbox": conn.outbox.statistics(),
        "conversations": fanout.tables_of(conn),
    }


async def serve_admin(
    app: Starlette,
    host: str,
    port: int,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin app until `stop` is set (then shut down cleanly) or cancelled;
    `started(port)` once it listens."""
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None

    async def bound(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        asgi: Any = app  # hypercorn's ASGI types are narrower than Starlette's signature
        await hypercorn_serve(asgi, config, shutdown_trigger=stop.wait, task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(bound)
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
