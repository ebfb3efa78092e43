from __future__ import annotations

import re
from pathlib import Path

import pytest

from imcore.config import Config, ConfigError, build, from_env, from_toml, toml_value

EXAMPLE = Path(__file__).resolve().parents[1] / "imcore.toml"


def test_the_example_file_lists_every_key_with_its_default() -> None:
    shown = {}
    for line in EXAMPLE.read_text().splitlines():
        match = re.match(r"# (\w+) = (\S+)", line)
        if match:
            shown[match.group(1)] = match.group(2)
    defaults = Config().to_flat()
    assert set(shown) == set(defaults)
    for key, value in defaults.items():
        if key != "auth_secret":
            assert shown[key] == toml_value(value), key


def test_environment_keys_are_upper_case_with_a_prefix() -> None:
    assert from_env({"IMCORE_MAX_BODY": "5", "IMCORE_NOPE": "1", "HOME": "/"}) == {"max_body": "5"}


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"port": "eighty"}, "port"),
        ({"port": -1}, "port"),
        ({"fsync": "sometimes"}, "fsync"),
        ({"send_rate": 0}, "send_rate"),
        ({"auth_secret": ""}, "auth_secret"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_bad_settings_name_their_key(values: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build(values)


def test_limits_are_settings_too() -> None:
    config = build({"max_body": "10", "port": 9})
    assert (config.limits.max_body, config.port) == (10, 9)


def test_broken_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        from_toml("port = ")
