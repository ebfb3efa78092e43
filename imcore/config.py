"""Config: every setting in one typed, frozen object; loaded from TOML, env and flags.

Precedence (spec §11): flags > `IMCORE_*` environment variables > the `--config` TOML file >
defaults. Every key of `Config` and of the core's `Limits` is a TOML key, an environment
variable (`IMCORE_` + upper case) and a flag (`--` + dashes). An unknown key or a bad value
stops the start with a message naming the key.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core import Limits

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

FSYNC_POLICIES = ("always", "interval", "never")


class ConfigError(Exception):
    """A setting is unknown or has a bad value; the message names it."""


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = Path("./data")
    fsync: str = "always"
    fsync_interval_ms: int = 100
    snapshot_every: int = 1_000_000  # records between snapshots ...
    snapshot_interval_s: float = 300.0  # ... or seconds, whichever comes first
    auth_secret: str | None = None
    admin_host: str = "127.0.0.1"
    admin_port: int = 8766
    shards: int = 16  # fan-out ordering domains
    hot_tail_bytes: int = 64 * 1024 * 1024  # recent events kept in memory, all together
    retention_interval_s: float = 60.0  # how often retention moves floors
    log_level: str = "info"
    log_format: str = "text"  # text (key=value) | json
    limits: Limits = field(default_factory=Limits)

    def to_flat(self) -> dict[str, Any]:
        """Every setting by its key, as `--print-config` and the example file show them."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "limits"}
        flat.update({f.name: getattr(self.limits, f.name) for f in fields(Limits)})
        return flat


_SERVER_KEYS = {f.name for f in fields(Config)} - {"limits"}
_LIMIT_KEYS = {f.name for f in fields(Limits)}
_DEFAULTS = Config().to_flat()


def toml_value(value: object) -> str:
    """`value` as TOML source, the way `--print-config` and the example file show it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def _convert(key: str, raw: object) -> Any:
    default = _DEFAULTS[key]
    try:
        if key == "auth_secret":
            if not isinstance(raw, str) or not raw:
                raise ValueError("must be a non-empty string")
            return raw
        if isinstance(default, bool):
            if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0"):
                return raw.lower() in ("true", "1")
            if isinstance(raw, bool):
                return raw
            raise ValueError("must be true or false")
        if isinstance(default, int):
            if isinstance(raw, bool):
                raise ValueError("must be an integer")
            value: Any = int(raw)  # type: ignore[call-overload]
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if isinstance(default, float):
            value = float(raw)  # type: ignore[arg-type]
            if value <= 0:
                raise ValueError("must be positive")
            return value
        if isinstance(default, Path):
            return Path(str(raw))
        if not isinstance(raw, str):
            raise ValueError("must be a string")
        if key == "fsync" and raw not in FSYNC_POLICIES:
            raise ValueError(f"must be one of {', '.join(FSYNC_POLICIES)}")
        if key == "log_format" and raw not in ("text", "json"):
            raise ValueError("must be text or json")
        if key == "log_level" and raw.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("must be debug, info, warning or error")
        return raw
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {key!r}: {raw!r} {exc}") from None


def build(values: Mapping[str, object]) -> Config:
    """A Config from flat `key: value` pairs (strings are converted).

    Raises:
        ConfigError: an unknown key or a bad value.
    """
    server: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for key, raw in values.items():
        if key in _SERVER_KEYS:
            server[key] = _convert(key, raw)
        elif key in _LIMIT_KEYS:
            limits[key] = _convert(key, raw)
        else:
            raise ConfigError(f"unknown setting {key!r}")
    return replace(Config(**server), limits=Limits(**limits))


def from_toml(text: str, source: str = "config file") -> dict[str, object]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return dict(data)


def from_env(environ: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in environ.items():
        if name.startswith("IMCORE_"):
            key = name.removeprefix("IMCORE_").lower()
            if key in _DEFAULTS:
                out[key] = value
    return out


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add `--config` and one flag per setting (absent flags leave the key unset)."""
    parser.add_argument("--config", type=Path, help="TOML file of settings")
    for key, default in _DEFAULTS.items():
        parser.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            default=argparse.SUPPRESS,
            metavar=type(default).__name__.upper() if default is not None else "STR",
            help=f"default {default}",
        )


def load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Merge file, environment and flags, in rising precedence.

    Raises:
        ConfigError: unreadable file, unknown key or bad value.
    """
    values: dict[str, object] = {}
    path: Path | None = getattr(args, "config", None)
    if path is not None:
        try:
            values.update(from_toml(path.read_text(), str(path)))
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    values.update(from_env(environ))
    values.update({k: v for k, v in vars(args).items() if k in _DEFAULTS})
    return build(values)


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """Parse `imcore serve` style arguments into a Config (for tests and tools)."""
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return load(parser.parse_args(list(argv)), environ)
