"""Random and mutated frames never escape the protocol: the codec raises only ImcoreError,
and a session turns anything into effects (error frames, closes), never an exception."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imcore.core import Chat, Close, Codec, Encoding, Limits, Session, Write, auth
from imcore.core.errors import ImcoreError
from imcore.core.frames import Error
from tests.helpers.core import SECRET

if TYPE_CHECKING:
    from imcore.core.session import Effect

NOW = 1_700_000_000_000
OPS = [
    "hello",
    "send",
    "sync",
    "convs",
    "recv",
    "read",
    "group.create",
    "group.add",
    "group.remove",
    "group.join",
    "group.leave",
    "group.role",
    "group.info",
    "ping",
    "watch",
    "unwatch",
    "typing",
    "nope",
]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=80)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
fields = st.fixed_dictionaries(
    {"op": st.sampled_from(OPS)},
    optional={
        "id": st.one_of(st.integers(), st.text(max_size=70), values),
        "conv": st.one_of(st.sampled_from(["dm:a:b", "g:x", "dm:b:a", "g:", "x"]), values),
        "cmid": st.one_of(st.text(max_size=70), values),
        "body": values,
        "seq": st.one_of(st.integers(), values),
        "users": st.one_of(st.lists(st.sampled_from(["a", "b", "no way", ""])), values),
        "v": st.one_of(st.just(1), values),
        "token": st.one_of(st.just("x.y.z"), values),
        "device": st.one_of(st.just("d"), values),
        "after": values,
        "limit": values,
        "role": st.one_of(st.sampled_from(["admin", "member", "owner"]), values),
    },
)


def session(encoding: Encoding) -> Session:
    chat = Chat(Limits(abuse_errors=10_000))
    s = Session(chat, Codec(encoding, chat.limits), secret=SECRET, session_id="s", now_ms=NOW)
    hello = {"op": "hello", "v": 1, "token": auth.mint("a", SECRET, now_ms=NOW), "device": "d"}
    s.handle(json.dumps(hello) if encoding is Encoding.JSON else cbor2.dumps(hello), NOW)
    return s


def allowed(effects: list[Effect]) -> None:
    for effect in effects:
        if isinstance(effect, Write) and isinstance(effect.frame, Error):
            assert effect.frame.code != "internal"
        if isinstance(effect, Close):
            assert effect.code in (4001, 4002, 4029)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    for encoding in Encoding:
        with contextlib.suppress(ImcoreError):
            Codec(encoding, Limits()).decode(data)
        allowed(session(encoding).handle(data, NOW))
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return
    allowed(session(Encoding.JSON).handle(text, NOW))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields, st.sampled_from(list(Encoding)), st.integers(0, 40))
def test_mutated_frames(frame: dict[str, object], encoding: Encoding, cut: int) -> None:
    s = session(encoding)
    data = json.dumps(frame) if encoding is Encoding.JSON else cbor2.dumps(frame)
    allowed(s.handle(data, NOW))
    allowed(s.handle(data[: max(0, len(data) - cut)], NOW))
