"""`imcore-admin`: operator commands.

Offline, on a data directory: `token`, `verify [--repair]`, `inspect`, `wal dump`, and
`backup` (beside a running server too). Online, against the admin port: `status`,
`conns`, `user`, `conv`, `kick`, `snapshot`, as aligned tables (rich) or `--json`. Exit
codes: 0 ok, 1 damage, not found or failed, 2 bad usage, 3 server unreachable, 4 token
refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import admin_api
from .core import CursorRecord, DeliveredRecord, Event, Limits, auth
from .core.errors import Invalid
from .core.history import ReadPage
from .core.ids import user_id
from .core.records import FloorRecord
from .core.wal_format import record_to_wire, scan_segment
from .server.backup import BackupError, backup
from .server.datadir import StartupError, Verification, inspect, repair, verify
from .server.files import Files
from .server.layout import list_segments, snapshot_dir, wal_dir
from .server.secret import load_or_create_secret


def _token(args: argparse.Namespace) -> int:
    try:
        users = [user_id(u) for u in args.user]
    except Invalid as exc:
        print(f"imcore-admin: {exc.message}", file=sys.stderr)
        return 2
    secret = args.secret or os.environ.get("IMCORE_AUTH_SECRET")
    if not secret:
        secret = load_or_create_secret(args.data_dir)
    claims = {"admin": True} if args.admin else {}
    now_ms = int(time.time() * 1000)
    tokens = {u: auth.mint(u, secret, now_ms=now_ms, ttl_s=args.ttl, **claims) for u in users}
    if args.json:
        print(json.dumps(tokens, indent=2))
    else:
        print("\n".join(tokens.values()))
    return 0


class AdminError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _admin_token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("IMCORE_ADMIN_TOKEN")
    if token:
        return str(token)
    secret = args.secret or os.environ.get("IMCORE_AUTH_SECRET")
    if not secret:
        path = args.data_dir / "secret"
        if not path.exists():
            raise AdminError("no admin token: pass --token, or --data-dir of the server", 2)
        secret = path.read_text().strip()
    return auth.mint("admin", secret, now_ms=int(time.time() * 1000), ttl_s=300, admin=True)


def _call(args: argparse.Namespace, method: str, path: str) -> Any:
    url = args.url.rstrip("/") + path
    request = urllib.request.Request(url, method=method)
    request.add_header("Authorization", f"Bearer {_admin_token(args)}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise AdminError(
                "the admin token was refused (imcore-admin token --admin)", 4
            ) from None
        try:
            message = json.load(exc).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise AdminError(f"{method} {path}: {message}", 1) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(
            f"cannot reach the admin port at {args.url} ({reason}): is the server running?", 3
        ) from None


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else str(value)


def _pairs(title: str, data: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in data.items():
        table.add_row(key, _cell(value))
    return table


def _online(args: argparse.Namespace) -> int:
    console = Console()
    try:
        while True:
            data = _call(args, *args.request(args))
            if args.json:
                print(json.dumps(data, indent=2))
            else:
                for table in args.render(data):
                    console.print(table)
            if not getattr(args, "watch", None):
                return 0
            time.sleep(args.watch)
            if not args.json:
                console.clear()
    except AdminError as exc:
        print(f"imcore-admin: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0


def _render_status(data: dict[str, Any]) -> list[Table]:
    return [_pairs("imcore status", data)]


def _render_conns(data: dict[str, Any]) -> list[Table]:
    columns = ["session", "user", "device", "state", "encoding", "outbox", "conversations"]
    title = (
        f"connections {data['offset']}..{data['offset'] + len(data['conns'])} of {data['total']}"
    )
    return [_table(title, data["conns"], columns)]


def _render_user(data: dict[str, Any]) -> list[Table]:
    head = {k: data[k] for k in ("user", "online", "last_seen")}
    devices = _table("devices", data["devices"], ["session", "device", "encoding", "outbox"])
    columns = ["conv", "head", "read", "unread", "floor", "peer_read", "peer_delivered"]
    convs = _table("conversations", data["convs"], columns)
    return [_pairs("user", head), devices, convs]


def _render_conv(data: dict[str, Any]) -> list[Table]:
    head = {k: data[k] for k in ("conv", "head", "floor")}
    members = _table("members", data["members"], ["user", "role", "read", "delivered"])
    events = _table(
        "last events", data["last_events"], ["seq", "ts", "from", "cmid", "body", "sys"]
    )
    return [_pairs("conversation", head), members, events]


def _render_done(data: dict[str, Any]) -> list[Table]:
    return [_pairs("done", data)]


def _print_verification(found: Verification) -> None:
    for name, state in found.snapshots:
        print(f"snapshot {name}: {state}")
    print(f"wal segments:   {found.segments}")
    print(f"wal records:    {found.records}")
    print(f"conversations:  {found.conversations}")
    print(f"events:         {found.events}")
    store = found.store
    if store is not None and not store.readable:
        print("history store:  unreadable")
    elif store is not None and store.present:
        print(f"history store:  lsn {store.lsn}, {store.events} events, {store.bytes} bytes")
    elif store is not None:
        print("history store:  none (a start builds it from the log)")
    if store is not None and store.ahead:
        print(f"store ahead:    {store.ahead}")
    if found.torn:
        print(f"torn tail:      {found.torn} (dropped at the next start)")
    if found.damage:
        print(f"DAMAGE ({len(found.damage)}):")
        for line in found.damage:
            print(f"  - {line}")


def _verify(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    if not data_dir.is_dir():
        print(f"imcore-admin: no data directory at {data_dir}", file=sys.stderr)
        return 2
    found = verify(data_dir, Limits())
    _print_verification(found)
    if found.damage and args.repair:
        try:
            done = repair(data_dir, Limits(), Files())
        except (StartupError, OSError, sqlite3.Error) as exc:
            print(f"imcore-admin: cannot repair: {exc}", file=sys.stderr)
            return 1
        print(f"REPAIRED ({len(done)}):")
        for line in done:
            print(f"  - {line}")
        print("after the repair:")
        found = verify(data_dir, Limits())
        _print_verification(found)
    if found.damage:
        if not args.repair:
            print(
                "`imcore-admin verify --repair` (or `imcore serve --repair`) truncates the log "
                "at the first damage, rebuilds the history store, and says what is lost."
            )
        return 1
    print("no damage found")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    if not wal_dir(data_dir).is_dir() and not snapshot_dir(data_dir).is_dir():
        print(f"imcore-admin: no imcore data in {data_dir}", file=sys.stderr)
        return 2
    try:
        chat, report, history = inspect(data_dir, Limits())
    except sqlite3.Error as exc:
        print(
            f"imcore-admin: the history store is unreadable ({exc}): see `imcore-admin verify`",
            file=sys.stderr,
        )
        return 1
    data: Any
    try:
        if args.user:
            data, render = admin_api.user(chat, args.user, []), _render_user
        elif args.conv:
            stored = None
            while isinstance(
                found := admin_api.last_events(chat, args.conv, args.last, stored), ReadPage
            ):
                stored = (found, history.read_page(found.conv, found.low, found.high))
            data, render = admin_api.conversation(chat, args.conv, found), _render_conv
            if data is None:
                print(f"imcore-admin: no conversation {args.conv} in {data_dir}", file=sys.stderr)
                return 1
        else:
            conversations, events = chat.retained()
            data = {
                "snapshot_lsn": report.snapshot_lsn,
                "last_lsn": report.last_lsn,
                "replayed": report.replayed,
                "conversations": conversations,
                "events": events,
                "clock": chat.clock.value,
                "damage": None if report.corrupt is None else report.corrupt[1].reason,
            }
            render = _render_status
    finally:
        history.close()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for table in render(data):
            Console().print(table)
    return 1 if report.corrupt is not None else 0


def _backup(args: argparse.Namespace) -> int:
    try:
        made = backup(args.data_dir, args.to, progress=lambda line: print(line, flush=True))
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"imcore-admin: backup failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"store lsn {made.store_lsn}, snapshot lsn {made.snapshot_lsn}, log records "
        f"{made.log_first}..{made.log_last} in {made.segments} segments, {made.bytes} bytes"
    )
    return 0


#: `wal dump`'s name for each kind of record.
_DUMP_KINDS = {
    Event: "event",
    CursorRecord: "read",
    DeliveredRecord: "delivered",
    FloorRecord: "floor",
}


def _wal_dump(args: argparse.Namespace) -> int:
    for first, path in list_segments(wal_dir(args.data_dir)):
        scan = scan_segment(path.read_bytes(), first)
        for item in scan.records:
            wire = record_to_wire(item.record)
            kind = _DUMP_KINDS[type(item.record)]
            print(json.dumps({"lsn": item.lsn, "kind": kind, "record": wire[1:]}, default=repr))
        if scan.damage is not None:
            print(f"# {path.name}: {scan.damage}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imcore-admin", description="imcore operator tool")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="mint a client token (offline)")
    token.add_argument("user", nargs="+", help="one token a line, in order")
    source = token.add_mutually_exclusive_group()
    source.add_argument("--data-dir", type=Path, default=Path("./data"))
    source.add_argument("--secret", help="the server's --auth-secret")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--admin", action="store_true", help="an operator's token (claim admin)")
    token.add_argument("--json", action="store_true", help="a JSON map of user to token")
    token.set_defaults(run=_token)
    online = argparse.ArgumentParser(add_help=False)
    online.add_argument(
        "--url", default=os.environ.get("IMCORE_ADMIN_URL", "http://127.0.0.1:8766")
    )
    online.add_argument("--token", help="admin token (default: $IMCORE_ADMIN_TOKEN, else minted)")
    online.add_argument("--data-dir", type=Path, default=Path("./data"), help="to mint a token")
    online.add_argument("--secret", help="the server's --auth-secret, to mint a token")
    online.add_argument("--json", action="store_true", help="machine-readable output")
    views: list[tuple[str, str, Any, Any]] = [
        ("status", "what the server is doing now", lambda a: ("GET", "/status"), _render_status),
        (
            "conns",
            "live connections",
            lambda a: ("GET", f"/conns?offset={a.offset}&limit={a.limit}"),
            _render_conns,
        ),
        (
            "user",
            "a user's devices, presence and cursors",
            lambda a: ("GET", f"/users/{a.user}"),
            _render_user,
        ),
        (
            "conv",
            "a conversation's members and last events",
            lambda a: ("GET", f"/conversations/{a.conv}"),
            _render_conv,
        ),
        (
            "kick",
            "close a user's connections (4003)",
            lambda a: ("POST", f"/kick/{a.user}"),
            _render_done,
        ),
        ("snapshot", "write a snapshot now", lambda a: ("POST", "/snapshot"), _render_done),
    ]
    for name, help_text, request, render in views:
        command = commands.add_parser(name, help=help_text, parents=[online])
        if name in ("user", "kick"):
            command.add_argument("user")
        if name == "conv":
            command.add_argument("conv")
        if name == "conns":
            command.add_argument("--offset", type=int, default=0)
            command.add_argument("--limit", type=int, default=100)
        if name == "status":
            command.add_argument("--watch", type=float, metavar="N", help="refresh every N s")
        command.set_defaults(run=_online, request=request, render=render)
    check = commands.add_parser(
        "verify", help="check snapshots, the log and the history store offline"
    )
    check.add_argument("--data-dir", type=Path, required=True)
    check.add_argument(
        "--repair",
        action="store_true",
        help="on damage: truncate the log there and rebuild the history store (server stopped)",
    )
    check.set_defaults(run=_verify)
    copy = commands.add_parser(
        "backup", help="a consistent copy of a data directory, while its server runs"
    )
    copy.add_argument("--data-dir", type=Path, required=True)
    copy.add_argument("--to", type=Path, required=True, help="a new directory")
    copy.set_defaults(run=_backup)
    peek = commands.add_parser("inspect", help="the state in a data directory, offline")
    peek.add_argument("--data-dir", type=Path, required=True)
    peek.add_argument("--user", help="one user's conversations and cursors")
    peek.add_argument("--conv", help="one conversation's members and last events")
    peek.add_argument("--last", type=int, default=20, help="events to show with --conv")
    peek.add_argument("--json", action="store_true")
    peek.set_defaults(run=_inspect)
    wal = commands.add_parser("wal", help="the write-ahead log, offline")
    wal_commands = wal.add_subparsers(dest="wal_command", required=True)
    dump = wal_commands.add_parser("dump", help="print every record, one JSON line each")
    dump.add_argument("--data-dir", type=Path, required=True)
    dump.set_defaults(run=_wal_dump)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
