"""`imcore serve`: arguments and environment -> Config -> trio.run(serve)."""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial

import trio

from . import __version__
from .config import ConfigError, add_flags, load, toml_value
from .logs import configure as configure_logs
from .server import StartupError, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imcore", description="imcore chat server")
    parser.add_argument("--version", action="version", version=f"imcore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the server")
    add_flags(serve_cmd)
    serve_cmd.add_argument(
        "--print-config", action="store_true", help="print the effective settings and exit"
    )
    serve_cmd.add_argument(
        "--repair",
        action="store_true",
        help="truncate a write-ahead log damaged before its tail (losing what follows)",
    )
    args = parser.parse_args(argv)
    try:
        config = load(args, os.environ)
    except ConfigError as exc:
        print(f"imcore: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        for key, value in config.to_flat().items():
            if key == "auth_secret":
                print(f"# {key} is {'set' if value else 'unset'}")
            else:
                print(f"{key} = {toml_value(value)}")
        return 0
    configure_logs(config.log_level, config.log_format)
    try:
        trio.run(partial(serve, config, repair=args.repair, handle_signals=True))
    except StartupError as exc:
        print(f"imcore: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
