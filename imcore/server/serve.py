"""serve(): the trio shell around the core: recovery, committer, snapshots, fan-out, accept.

Prints `imcore listening on ws://HOST:PORT/ws` once it accepts connections (spec §11), and
on `stop` (SIGTERM/SIGINT from the command line) shuts down gracefully: stop accepting,
close every connection with 1001, commit what is pending, fsync, snapshot, return.
"""

from __future__ import annotations

import gc
import logging
import resource
import secrets
import signal
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

import trio

from ..core import CloseCode, Codec, Encoding, Session
from .admin_http import AdminState, build_app, serve_admin
from .checkpoint import Checkpoint
from .collector import Collector
from .committer import Committer
from .connection import Connection, Connections
from .datadir import FORMAT_VERSION, DataDirLock, open_state, write_format
from .fanout import Fanout
from .files import Files, run_blocking
from .layout import snapshot_dir, wal_dir
from .metrics import Metrics
from .retention import Retention
from .secret import load_or_create_secret
from .snapshots import Snapshotter
from .timers import Timers
from .wal import Wal
from .websocket import Refuse, Upgrade, accept

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ..config import Config
    from ..core import Chat
    from ..core.history import StoreAnswer, StoreQuery
    from .store import HistoryStore

log = logging.getLogger("imcore")

#: Encodings in the order of `Hub.codecs`; a connection's `codec_index` points here.
ENCODINGS = (Encoding.CBOR, Encoding.JSON)
WS_PATH = "/ws"  # spec §1
#: spec §11: the whole shutdown must finish within 10 s; connections get this long to close.
CLOSE_GRACE_S = 5.0


@dataclass(slots=True)
class Hub:
    """What every connection of one server shares (`connection.Services`)."""

    chat: Chat
    codecs: list[Codec]
    committer: Committer
    connections: Connections
    fanout: Fanout
    metrics: Metrics
    secret: str
    timers: Timers
    now_ms: Callable[[], int]
    read_store: Callable[[StoreQuery], Awaitable[StoreAnswer]]


@dataclass(frozen=True, slots=True)
class RunningServer:
    """What `serve` reports once it accepts connections. `stop.set()` shuts it down."""

    host: str
    port: int
    admin_port: int = 0
    stop: trio.Event = field(default_factory=trio.Event, compare=False)


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
    files: Files | None = None,
    repair: bool = False,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the server until cancelled, or until `RunningServer.stop` is set.

    Args:
        config: the settings.
        listeners: listeners to serve on instead of a TCP port (tests pass in-memory ones).
        files: the file layer (tests inject faults through it).
        repair: truncate a log damaged before its tail instead of refusing to start.
        handle_signals: shut down gracefully on SIGTERM and SIGINT.
        task_status: `started(RunningServer)` once connections are accepted.

    Raises:
        StartupError: the data directory is locked by another server, or damaged.
    """
    files = files or Files()
    limits = replace(config.limits, max_connections=connection_limit(config.limits.max_connections))
    lock = DataDirLock(config.data_dir)
    wal: Wal | None = None
    store: HistoryStore | None = None
    collector: Collector | None = None
    try:
        secret = config.auth_secret or load_or_create_secret(config.data_dir)
        gc.disable()  # recovery makes millions of objects and no garbage cycles
        try:
            recovered = await run_blocking(
                files,
                partial(
                    open_state,
                    config.data_dir,
                    limits,
                    files,
                    repair=repair,
                    tail_bytes=config.hot_tail_bytes,
                ),
            )
        finally:
            gc.enable()
        collector = Collector()
        collector.install()
        chat, store = recovered.chat, recovered.store
        checkpoint = Checkpoint(store, chat, files)
        wal = Wal(
            wal_dir(config.data_dir),
            files,
            next_lsn=recovered.report.last_lsn + 1,
            segment=recovered.segment,
            fsync=config.fsync,
        )
        snapshotter = Snapshotter(
            chat,
            wal,
            snapshot_dir(config.data_dir),
            files,
            every_records=config.snapshot_every,
            interval_s=config.snapshot_interval_s,
            store_sync=checkpoint.sync,
        )
        # Wall-clock ms that follow trio's clock, so tests on a MockClock control time.
        offset = time.time() - trio.current_time()

        def now_ms() -> int:
            return int((trio.current_time() + offset) * 1000)

        codecs = [Codec(e, limits) for e in ENCODINGS]
        metrics = Metrics()
        connections = Connections(chat.presence.sessions)
        fanout = Fanout(codecs, config.shards, connections, metrics, now_ms)
        committer = Committer(
            chat,
            fanout.publish,
            wal,
            metrics,
            on_commit=snapshotter.poke,
            on_durable=checkpoint.committed,
        )
        retention = Retention(
            chat, store, committer, files, config.retention_interval_s, lambda: now_ms()
        )
        wal.on_write = metrics.observe_write
        snapshotter.on_snapshot = metrics.snapshot_seconds.observe
        collector.on_pause = metrics.gc_pause.observe
        metrics.wal_bytes.set_function(lambda: wal.bytes_written)

        timers = Timers()
        hub = Hub(
            chat=chat,
            codecs=codecs,
            committer=committer,
            connections=connections,
            fanout=fanout,
            metrics=metrics,
            secret=secret,
            timers=timers,
            now_ms=now_ms,
            read_store=partial(read_store, store, files, trio.CapacityLimiter(STORE_READERS)),
        )
        async with trio.open_nursery() as services:
            await services.start(checkpoint.run)
            if recovered.upgraded:
                await snapshotter.take(force=True)
                await run_blocking(files, write_format, config.data_dir, files)
                log.warning("upgrade finished: the data directory is now format %d", FORMAT_VERSION)
            services.start_soon(retention.run)
            await services.start(fanout.run)
            await services.start(timers.run)
            await services.start(committer.run)
            await services.start(snapshotter.run)
            services.start_soon(_probe_loop_lag, metrics)
            services.start_soon(collector.watch)
            admin_state = AdminState(
                chat=chat,
                connections=connections,
                fanout=fanout,
                metrics=metrics,
                secret=secret,
                now_ms=now_ms,
                wal=wal,
                snapshotter=snapshotter,
                fsync=config.fsync,
                store=store,
                checkpoint=checkpoint,
                read_store=hub.read_store,
            )
            metrics.history = admin_state.history
            admin = build_app(admin_state)
            admin_stop, admin_done = trio.Event(), trio.Event()

            async def run_admin(*, task_status: trio.TaskStatus[int]) -> None:
                try:
                    await serve_admin(
                        admin,
                        config.admin_host,
                        config.admin_port,
                        admin_stop,
                        task_status=task_status,
                    )
                finally:
                    admin_done.set()

            admin_port = await services.start(run_admin)
            if config.fsync == "interval":
                services.start_soon(wal.run_interval_sync, config.fsync_interval_ms)
            running = await _serve_connections(
                config, hub, listeners, admin_port, handle_signals, task_status
            )
            log.info("shutting down: committing, syncing and writing a snapshot")
            with trio.CancelScope(shield=True):
                await committer.drain()
                try:
                    await checkpoint.drain()
                    await wal.sync()
                    await snapshotter.take()
                except OSError as exc:
                    log.error("shutdown could not finish", extra={"fields": {"error": str(exc)}})
                admin_stop.set()  # let hypercorn close its side before the rest is cancelled
                with trio.move_on_after(2):
                    await admin_done.wait()
            services.cancel_scope.cancel()
            del running
        log.info("stopped")
    finally:
        if collector is not None:
            collector.uninstall()
        if wal is not None:
            wal.close()
        if store is not None:
            store.close()
        lock.release()


#: Worker threads reading the history store at once (cold pages, dedup lookups): enough
#: to overlap reads of the disk, few enough that they never crowd out the loop.
STORE_READERS = 4


async def read_store(
    store: HistoryStore, files: Files, limiter: trio.CapacityLimiter, query: StoreQuery
) -> StoreAnswer:
    """Carry out a query of the core on the store, in a worker thread."""
    if not files.in_thread:
        await trio.lowlevel.checkpoint()
        return store.answer(query)
    return await trio.to_thread.run_sync(store.answer, query, limiter=limiter)


#: Open files kept back from clients: log segments, snapshots, the admin port, accepts.
FD_RESERVE = 128


def connection_limit(configured: int) -> int:
    """Raise the open-file soft limit to the hard limit; the connections that fit under it.

    A server that runs out of descriptors fails accept() for everyone, so clients beyond
    the limit are refused (HTTP 503) before they cost one more than the handshake's.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("open files", extra={"fields": {"soft_limit_was": soft, "hard_limit": hard}})
    fit = max(1, hard - FD_RESERVE)
    return min(configured, fit) if configured else fit


async def _serve_connections(
    config: Config,
    hub: Hub,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]] | None,
    admin_port: int,
    handle_signals: bool,
    task_status: trio.TaskStatus[RunningServer],
) -> RunningServer:
    """Accept until stopped; then close every connection with 1001 and wait for them."""
    if listeners is None:
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    async with trio.open_nursery() as connections:
        accepting = trio.CancelScope()

        async def accept_connections(
            *, task_status: trio.TaskStatus[list[trio.abc.Listener[trio.abc.Stream]]]
        ) -> None:
            with accepting:
                await trio.serve_listeners(
                    partial(_handle, hub),
                    list(listeners),
                    handler_nursery=connections,
                    task_status=task_status,
                )

        await connections.start(accept_connections)
        port = _port(listeners, config.port)
        running = RunningServer(config.host, port, admin_port)
        if handle_signals:
            connections.start_soon(_stop_on_signal, running.stop)
        print(f"imcore listening on ws://{config.host}:{port}{WS_PATH}", flush=True)
        fields = {
            "host": config.host,
            "port": port,
            "admin": f"{config.admin_host}:{admin_port}",
            "fsync": config.fsync,
        }
        log.info("listening", extra={"fields": fields})
        task_status.started(running)
        await running.stop.wait()
        accepting.cancel()
        for conn in hub.connections:
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        connections.cancel_scope.deadline = trio.current_time() + CLOSE_GRACE_S
    return running


#: How often the event-loop lag is probed.
LAG_PROBE_S = 0.5


async def _probe_loop_lag(metrics: Metrics) -> None:
    """Sleep a fixed time, again and again; how late each wake-up comes is the loop's lag."""
    while True:
        asked = trio.current_time() + LAG_PROBE_S
        await trio.sleep_until(asked)
        metrics.loop_lag.set(trio.current_time() - asked)
        metrics.sample_rates(LAG_PROBE_S)


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()
            return


def _port(listeners: Sequence[trio.abc.Listener[trio.abc.Stream]], default: int) -> int:
    for listener in listeners:
        if isinstance(listener, trio.SocketListener):
            port: int = listener.socket.getsockname()[1]
            return port
    return default


async def _handle(hub: Hub, stream: trio.abc.Stream) -> None:
    # An exception escaping here would reach the accept loop and stop the whole server,
    # so every failure ends with this one connection.
    try:
        limits = hub.chat.limits
        ws = None
        with trio.move_on_after(limits.hello_timeout_ms / 1000):
            ws = await accept(stream, partial(_choose, hub), limits.max_frame)
        if ws is not None:
            encoding = Encoding(ws.subprotocol) if ws.subprotocol else Encoding.JSON
            index = ENCODINGS.index(encoding)
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
    finally:
        await trio.aclose_forcefully(stream)


def _choose(hub: Hub, upgrade: Upgrade) -> str | Refuse | None:
    """The answer to an opening handshake: a subprotocol, or a refusal."""
    if upgrade.path.partition("?")[0] != WS_PATH:
        return Refuse(404, b"not found: imcore serves WebSocket at /ws\n")
    if len(hub.connections) >= hub.chat.limits.max_connections:
        return Refuse(503, b"too many connections; try again later\n")
    encoding = choose_encoding(upgrade.subprotocols)
    return encoding.value if encoding is not None else None
