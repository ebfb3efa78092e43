"""The two wire encodings (spec §1) with one schema: bytes in, validated frames out, and back.

Pure. This is the only module that touches cbor2/json errors: they become `BadFrame` here.
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import cbor2

from . import ids
from .errors import BadFrame, FrameId, ImcoreError, Invalid, TooLarge, Unauthorized, UnknownOp
from .frames import (
    ClientFrame,
    Convs,
    GroupAdd,
    GroupCreate,
    GroupInfo,
    GroupJoin,
    GroupLeave,
    GroupRemove,
    GroupRole,
    Hello,
    Ping,
    Read,
    Recv,
    Send,
    ServerFrame,
    Sync,
    Typing,
    Unwatch,
    Watch,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .limits import Limits

MAX_ID_CHARS = 64  # spec §1
MAX_TOKEN_CHARS = 8192  # a JWT is a few hundred chars; this only bounds the work of verifying
MAX_BODY_DEPTH = 64  # bounds the validator's work; real message bodies are a few levels deep
_INT64 = 2**63
ROLES = frozenset({"admin", "member"})


class Encoding(StrEnum):
    """The WebSocket subprotocols of spec §1."""

    CBOR = "imcore.v1.cbor"
    JSON = "imcore.v1.json"


def _int(m: dict[str, Any], key: str, *, required: bool = True, minimum: int = 0) -> Any:
    value = m.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value < _INT64:
        raise Invalid(f"{key} must be an integer >= {minimum}")
    return value


def _str(m: dict[str, Any], key: str, max_chars: int) -> str | None:
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise Invalid(f"{key} must be a string of at most {max_chars} chars")
    return value


def _bool(m: dict[str, Any], key: str, default: bool) -> bool:
    value = m.get(key, default)
    if not isinstance(value, bool):
        raise Invalid(f"{key} must be true or false")
    return value


def _group(value: object) -> str:
    conv = ids.conv_id(value)
    if not ids.is_group(conv):
        raise Invalid("conv must be a group, g:<name>")
    return conv


def _frame_id(m: dict[str, Any]) -> FrameId:
    value = m.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid("id must be an integer or a string")
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise Invalid("id must fit in 64 bits")
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        raise Invalid("id must be at most 64 chars")
    return value


def check_body(body: Any) -> None:
    """Check that `body` lies in the data model both encodings share.

    Bodies are relayed between CBOR and JSON clients, so CBOR-only values (byte strings,
    tags, non-string keys, undefined) and non-finite floats are refused.

    Raises:
        Invalid: with the first offending value's kind.
    """
    if body is None or isinstance(body, bool | int | str):
        return  # the common case needs no walk
    stack: list[tuple[Any, int]] = [(body, 0)]
    while stack:
        value, depth = stack.pop()
        if value is None or isinstance(value, bool | int | str):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise Invalid("body must not hold NaN or infinity")
            continue
        if depth >= MAX_BODY_DEPTH:
            raise Invalid(f"body is nested deeper than {MAX_BODY_DEPTH} levels")
        if isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise Invalid("body map keys must be strings")
                stack.append((v, depth + 1))
        else:
            raise Invalid(f"body holds a {type(value).__name__}, which JSON cannot carry")


class Codec:
    """One encoding's decoder and encoder, sharing one schema and one set of checks.

    Args:
        encoding: which subprotocol this connection speaks.
        limits: for `max_body` and `max_title`.
    """

    __slots__ = ("_dump", "_load", "encoding", "limits")

    def __init__(self, encoding: Encoding, limits: Limits) -> None:
        self.encoding = encoding
        self.limits = limits
        self._load: Callable[[bytes | str], Any]
        self._dump: Callable[[Any], bytes | str]
        if encoding is Encoding.CBOR:
            self._load, self._dump = _cbor_load, cbor2.dumps
        else:
            self._load, self._dump = _json_load, _json_dump

    def encode(self, frame: ServerFrame) -> bytes | str:
        """Encode a server frame: bytes for CBOR (a binary message), str for JSON (text)."""
        return self._dump(frame.to_wire())

    def decode(self, data: bytes | str) -> ClientFrame:
        """Decode and validate one client frame: `parse(load(data))`."""
        return self.parse(self.load(data))

    def load(self, data: bytes | str) -> dict[str, Any]:
        """Decode one message into a map with a string `op`, without checking its fields.

        Raises:
            BadFrame: undecodable, not a map, or no string `op`.
        """
        try:
            m = self._load(data)
        except Exception as exc:
            raise BadFrame(f"undecodable frame: {type(exc).__name__}") from None
        if not isinstance(m, dict):
            raise BadFrame("a frame must be a map")
        if not isinstance(m.get("op"), str):
            raise BadFrame("a frame must have a string op")
        return m

    @staticmethod
    def frame_id(m: dict[str, Any]) -> FrameId:
        """The frame's `id` if it is a valid one, else None (for answering errors)."""
        try:
            return _frame_id(m)
        except Invalid:
            return None

    def parse(self, m: dict[str, Any]) -> ClientFrame:
        """Validate the fields of a loaded map into its frame.

        Raises:
            UnknownOp: an `op` this server does not know.
            ImcoreError: any field error (`Invalid`, `TooLarge`, `Unauthorized` for a
                malformed token), with `frame_id` set when the frame's `id` was readable.
        """
        op = m["op"]
        frame_id: FrameId = None
        try:
            frame_id = _frame_id(m)
            parse = _PARSERS.get(op)
            if parse is None:
                raise UnknownOp(f"unknown op {op[:64]!r}")
            return parse(self, m, frame_id)
        except ImcoreError as exc:
            exc.frame_id = frame_id
            raise

    def body_size(self, body: Any) -> int:
        """Bytes `body` takes in this encoding (spec §4 measures max_body so)."""
        dumped = self._dump(body)
        return len(dumped.encode() if isinstance(dumped, str) else dumped)

    # --- per-op parsers -----------------------------------------------------------------------

    def _hello(self, m: dict[str, Any], fid: FrameId) -> Hello:
        if m.get("v") != 1 or isinstance(m.get("v"), bool):
            raise Invalid("v must be 1")
        token = m.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
            raise Unauthorized("token must be a JWT string")
        return Hello(
            token=token,
            device=ids.device_id(m.get("device")),
            seen_ts=_int(m, "seen_ts", required=False),
            recv=_bool(m, "recv", True),
            id=fid,
        )

    def _send(self, m: dict[str, Any], fid: FrameId) -> Send:
        conv, cmid = ids.conv_id(m.get("conv")), ids.cmid(m.get("cmid"))
        if "body" not in m:
            raise Invalid("send needs a body")
        body = m["body"]
        check_body(body)
        if self.body_size(body) > self.limits.max_body:
            raise TooLarge(f"body is larger than max_body ({self.limits.max_body} bytes)")
        return Send(conv=conv, cmid=cmid, body=body, ts=_int(m, "ts", required=False), id=fid)

    def _sync(self, m: dict[str, Any], fid: FrameId) -> Sync:
        return Sync(
            conv=ids.conv_id(m.get("conv")),
            after=_int(m, "after", required=False),
            before=_int(m, "before", required=False),
            limit=_int(m, "limit", required=False, minimum=1),
            id=fid,
        )

    def _convs(self, m: dict[str, Any], fid: FrameId) -> Convs:
        return Convs(id=fid)

    def _recv(self, m: dict[str, Any], fid: FrameId) -> Recv:
        return Recv(conv=ids.conv_id(m.get("conv")), seq=_int(m, "seq"), id=fid)

    def _read(self, m: dict[str, Any], fid: FrameId) -> Read:
        return Read(conv=ids.conv_id(m.get("conv")), seq=_int(m, "seq"), id=fid)

    def _group_create(self, m: dict[str, Any], fid: FrameId) -> GroupCreate:
        members = m.get("members")
        return GroupCreate(
            conv=_group(m.get("conv")),
            title=_str(m, "title", self.limits.max_title),
            public=_bool(m, "public", False),
            members=ids.user_list(members, "members") if members not in (None, []) else (),
            id=fid,
        )

    def _group_add(self, m: dict[str, Any], fid: FrameId) -> GroupAdd:
        return GroupAdd(conv=_group(m.get("conv")), users=ids.user_list(m.get("users")), id=fid)

    def _group_remove(self, m: dict[str, Any], fid: FrameId) -> GroupRemove:
        return GroupRemove(conv=_group(m.get("conv")), users=ids.user_list(m.get("users")), id=fid)

    def _group_join(self, m: dict[str, Any], fid: FrameId) -> GroupJoin:
        return GroupJoin(conv=_group(m.get("conv")), id=fid)

    def _group_leave(self, m: dict[str, Any], fid: FrameId) -> GroupLeave:
        return GroupLeave(conv=_group(m.get("conv")), id=fid)

    def _group_role(self, m: dict[str, Any], fid: FrameId) -> GroupRole:
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise Invalid('role must be "admin" or "member"')
        return GroupRole(
            conv=_group(m.get("conv")), user=ids.user_id(m.get("user")), role=role, id=fid
        )

    def _group_info(self, m: dict[str, Any], fid: FrameId) -> GroupInfo:
        return GroupInfo(conv=_group(m.get("conv")), id=fid)

    def _ping(self, m: dict[str, Any], fid: FrameId) -> Ping:
        return Ping(id=fid)

    def _watch(self, m: dict[str, Any], fid: FrameId) -> Watch:
        return Watch(users=ids.user_list(m.get("users")), id=fid)

    def _unwatch(self, m: dict[str, Any], fid: FrameId) -> Unwatch:
        return Unwatch(users=ids.user_list(m.get("users")), id=fid)

    def _typing(self, m: dict[str, Any], fid: FrameId) -> Typing:
        return Typing(conv=ids.conv_id(m.get("conv")), id=fid)


_PARSERS: dict[str, Callable[[Codec, dict[str, Any], FrameId], ClientFrame]] = {
    "hello": Codec._hello,
    "send": Codec._send,
    "sync": Codec._sync,
    "convs": Codec._convs,
    "recv": Codec._recv,
    "read": Codec._read,
    "group.create": Codec._group_create,
    "group.add": Codec._group_add,
    "group.remove": Codec._group_remove,
    "group.join": Codec._group_join,
    "group.leave": Codec._group_leave,
    "group.role": Codec._group_role,
    "group.info": Codec._group_info,
    "ping": Codec._ping,
    "watch": Codec._watch,
    "unwatch": Codec._unwatch,
    "typing": Codec._typing,
}


#: Every op a client may send (spec §3-§9).
KNOWN_OPS = frozenset(_PARSERS)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# A \uD800-\uDFFF escape can decode to a lone surrogate, which no encoder can write back.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _json_load(data: bytes | str) -> Any:
    value = json.loads(data, parse_constant=_reject_constant)
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    if _SURROGATE_ESCAPE.search(text):
        _json_dump(value).encode()  # raises UnicodeEncodeError on a lone surrogate
    return value


def _json_dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _cbor_load(data: bytes | str) -> Any:
    if isinstance(data, str):
        raise TypeError("CBOR frames are binary messages")
    return cbor2.loads(data)
