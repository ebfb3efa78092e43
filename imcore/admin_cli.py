"""`imcore-admin`: operator commands. `token` mints a client token offline."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .core import auth
from .core.errors import Invalid
from .core.ids import user_id
from .server.secret import load_or_create_secret


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
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
