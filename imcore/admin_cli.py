"""`imcore-admin`: operator commands. `token` mints a client token offline."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .core import Limits, auth
from .core.errors import Invalid
from .core.ids import user_id
from .core.wal_format import record_to_wire, scan_segment
from .server.datadir import verify
from .server.secret import load_or_create_secret
from .server.wal import list_segments


def _token(args: argparse.Namespace) -> int:
    try:
        user = user_id(args.user)
    except Invalid as exc:
        print(f"imcore-admin: {exc.message}", file=sys.stderr)
        return 2
    secret = args.secret or os.environ.get("IMCORE_AUTH_SECRET")
    if not secret:
        secret = load_or_create_secret(args.data_dir)
    print(auth.mint(user, secret, now_ms=int(time.time() * 1000), ttl_s=args.ttl))
    return 0


def _verify(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    if not data_dir.is_dir():
        print(f"imcore-admin: no data directory at {data_dir}", file=sys.stderr)
        return 2
    found = verify(data_dir, Limits())
    for name, state in found.snapshots:
        print(f"snapshot {name}: {state}")
    print(f"wal segments:   {found.segments}")
    print(f"wal records:    {found.records}")
    print(f"conversations:  {found.conversations}")
    print(f"events:         {found.events}")
    if found.torn:
        print(f"torn tail:      {found.torn} (dropped at the next start)")
    if found.damage:
        print(f"DAMAGE ({len(found.damage)}):")
        for line in found.damage:
            print(f"  - {line}")
        print("`imcore serve --repair` truncates the log at the first damage and starts.")
        return 1
    print("no damage found")
    return 0


def _wal_dump(args: argparse.Namespace) -> int:
    for first, path in list_segments(args.data_dir / "wal"):
        scan = scan_segment(path.read_bytes(), first)
        for item in scan.records:
            wire = record_to_wire(item.record)
            kind = "event" if wire[0] == 1 else "read"
            print(json.dumps({"lsn": item.lsn, "kind": kind, "record": wire[1:]}, default=repr))
        if scan.damage is not None:
            print(f"# {path.name}: {scan.damage}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imcore-admin", description="imcore operator tool")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="mint a client token (offline)")
    token.add_argument("user")
    source = token.add_mutually_exclusive_group()
    source.add_argument("--data-dir", type=Path, default=Path("./data"))
    source.add_argument("--secret", help="the server's --auth-secret")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(run=_token)
    check = commands.add_parser("verify", help="check snapshots and the log offline")
    check.add_argument("--data-dir", type=Path, required=True)
    check.set_defaults(run=_verify)
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
