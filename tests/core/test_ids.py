from __future__ import annotations

import pytest

from imcore.core import ids
from imcore.core.errors import Invalid


@pytest.mark.parametrize("value", ["a", "Alice_1.x-y", "x" * 64])
def test_valid_user_ids(value: str) -> None:
    assert ids.user_id(value) == value


@pytest.mark.parametrize("value", ["", "x" * 65, "al ice", "al:ice", "é", 7, None])
def test_invalid_user_ids(value: object) -> None:
    with pytest.raises(Invalid):
        ids.user_id(value)


@pytest.mark.parametrize("value", ["dm:alice:bob", "dm:a:a", "dm:A:a", "g:team", "g:x.y-z_1"])
def test_valid_conversations(value: str) -> None:
    assert ids.conv_id(value) == value


@pytest.mark.parametrize(
    "value", ["dm:bob:alice", "dm:a", "dm::b", "dm:a:b:c", "g:", "g:a b", "x:a", "team", 5]
)
def test_invalid_conversations(value: object) -> None:
    with pytest.raises(Invalid):
        ids.conv_id(value)


def test_dm_parties_and_peer() -> None:
    assert ids.dm_users("dm:alice:bob") == ("alice", "bob")
    assert ids.dm_peer("dm:alice:bob", "bob") == "alice"
    assert ids.dm_peer("dm:a:a", "a") is None


@pytest.mark.parametrize("value", ["", "x" * 65, "tab\there", 3])
def test_invalid_cmids(value: object) -> None:
    with pytest.raises(Invalid):
        ids.cmid(value)


def test_user_list_drops_repeats_and_keeps_order() -> None:
    assert ids.user_list(["b", "a", "b"]) == ("b", "a")
    with pytest.raises(Invalid):
        ids.user_list([])
