"""Identifier syntax of spec §2: users, devices, conversations and cmids.

Pure: parses values that arrived in a frame and raises `Invalid`; it knows no state.
"""

from __future__ import annotations

import re

from .errors import Invalid

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CONV = re.compile(r"g:[A-Za-z0-9_.-]{1,64}|dm:([A-Za-z0-9_.-]{1,64}):([A-Za-z0-9_.-]{1,64})")
MAX_CMID = 64


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise Invalid(f"{field} must be 1-64 chars of [A-Za-z0-9_.-]")
    return value


def user_id(value: object, field: str = "user") -> str:
    """Return `value` if it is a valid user id.

    Raises:
        Invalid: it is not a string of 1-64 chars of `[A-Za-z0-9_.-]`.
    """
    return _name(value, field)


def device_id(value: object) -> str:
    """Return `value` if it is a valid device id (same syntax as a user id)."""
    return _name(value, "device")


def user_list(value: object, field: str = "users") -> tuple[str, ...]:
    """Return a non-empty list of distinct user ids, in the order given.

    Raises:
        Invalid: not a list, empty, or holding a bad id.
    """
    if not isinstance(value, list) or not value:
        raise Invalid(f"{field} must be a non-empty list of user ids")
    return tuple(dict.fromkeys(user_id(u, field) for u in value))


def conv_id(value: object) -> str:
    """Return `value` if it names a conversation: `dm:<a>:<b>` with a <= b, or `g:<name>`.

    Raises:
        Invalid: any other form, including `dm:b:a` with a < b.
    """
    if isinstance(value, str):
        match = _CONV.fullmatch(value)
        # User ids are ASCII, so str order is byte order.
        if match is not None and (match[1] is None or match[1] <= match[2]):
            return value
    raise Invalid("conv must be dm:<a>:<b> with a <= b, or g:<name>")


def is_group(conv: str) -> bool:
    return conv.startswith("g:")


def dm_users(conv: str) -> tuple[str, str]:
    """The two users of a direct conversation (equal for notes-to-self)."""
    _, a, b = conv.split(":")
    return a, b


def dm_peer(conv: str, user: str) -> str | None:
    """The other party of `conv` for `user`, or None for notes-to-self."""
    a, b = dm_users(conv)
    if a == b:
        return None
    return b if user == a else a


def cmid(value: object) -> str:
    """Return `value` if it is a cmid: 1-64 printable chars.

    Raises:
        Invalid: not a string of that form.
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CMID or not value.isprintable():
        raise Invalid("cmid must be 1-64 printable chars")
    return value
