from __future__ import annotations

import json
from typing import Any

import cbor2
import pytest

from imcore.core import Codec, Encoding, Limits
from imcore.core.errors import BadFrame, ImcoreError, Invalid, TooLarge, UnknownOp
from imcore.core.frames import (
    Ack,
    Event,
    GroupCreate,
    GroupRole,
    Hello,
    Send,
    Sync,
    SysChange,
)


def dump(encoding: Encoding, frame: Any) -> bytes | str:
    if encoding is Encoding.CBOR:
        return cbor2.dumps(frame)
    return json.dumps(frame)


@pytest.fixture(params=list(Encoding), ids=lambda e: e.name.lower())
def codec(request: pytest.FixtureRequest) -> Codec:
    return Codec(request.param, Limits(max_body=100))


def decode(codec: Codec, frame: Any) -> Any:
    return codec.decode(dump(codec.encoding, frame))


def test_send_decodes_into_its_frame(codec: Codec) -> None:
    frame = decode(codec, {"op": "send", "id": 7, "conv": "dm:a:b", "cmid": "c", "body": [1]})
    assert frame == Send(id=7, conv="dm:a:b", cmid="c", body=[1])


def test_unknown_keys_are_ignored(codec: Codec) -> None:
    frame = decode(codec, {"op": "sync", "id": "s", "conv": "g:x", "after": 3, "extra": 1})
    assert frame == Sync(id="s", conv="g:x", after=3)


def test_hello_defaults(codec: Codec) -> None:
    frame = decode(codec, {"op": "hello", "v": 1, "token": "t", "device": "d"})
    assert frame == Hello(token="t", device="d")


def test_group_create_with_members(codec: Codec) -> None:
    frame = decode(codec, {"op": "group.create", "conv": "g:x", "members": ["b", "c", "b"]})
    assert frame == GroupCreate(conv="g:x", members=("b", "c"))


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe", b"[1, 2]", b'"op"', b"{}", b'{"op": 5}'],
    ids=["garbage", "list", "string", "no-op", "op-not-string"],
)
def test_undecodable_or_shapeless_frames_are_bad_frame(data: bytes) -> None:
    with pytest.raises(BadFrame):
        Codec(Encoding.JSON, Limits()).decode(data)


def test_json_refuses_nan() -> None:
    with pytest.raises(BadFrame):
        Codec(Encoding.JSON, Limits()).decode('{"op": "ping", "x": NaN}')


@pytest.mark.parametrize(
    "text",
    [
        '{"op": "send", "conv": "dm:a:b", "cmid": "c", "body": "\\ud800"}',
        '{"op": "group.create", "conv": "g:t", "title": "\\uDFFF"}',
        '{"op": "ping", "id": "\\ud83d"}',
    ],
)
def test_json_refuses_lone_surrogates_which_no_encoder_can_write(text: str) -> None:
    with pytest.raises(BadFrame):
        Codec(Encoding.JSON, Limits()).decode(text)


def test_json_accepts_escaped_surrogate_pairs() -> None:
    frame = Codec(Encoding.JSON, Limits()).decode(
        '{"op": "send", "conv": "dm:a:b", "cmid": "c", "body": "\\ud83d\\ude00"}'
    )
    assert frame == Send(conv="dm:a:b", cmid="c", body="\U0001f600")


def test_cbor_refuses_text_messages() -> None:
    with pytest.raises(BadFrame):
        Codec(Encoding.CBOR, Limits()).decode('{"op": "ping"}')


def test_unknown_op_keeps_the_id(codec: Codec) -> None:
    with pytest.raises(UnknownOp) as info:
        decode(codec, {"op": "teleport", "id": 3})
    assert info.value.frame_id == 3


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "send", "id": 1, "conv": "dm:b:a", "cmid": "c", "body": 1},
        {"op": "send", "id": 1, "conv": "dm:a:b", "cmid": "", "body": 1},
        {"op": "send", "id": 1, "conv": "dm:a:b", "cmid": "c"},
        {"op": "send", "id": 1, "conv": "dm:a:b", "cmid": "c", "body": 1, "ts": -1},
        {"op": "send", "id": 1, "conv": "dm:a:b", "cmid": "c", "body": 1, "ts": True},
        {"op": "sync", "id": 1, "conv": "g:x", "limit": 0},
        {"op": "sync", "id": 1, "conv": "g:x", "after": "3"},
        {"op": "hello", "id": 1, "v": 2, "token": "t", "device": "d"},
        {"op": "hello", "id": 1, "v": 1, "token": "t", "device": "a b"},
        {"op": "hello", "id": 1, "v": 1, "token": "t", "device": "d", "recv": "no"},
        {"op": "group.create", "id": 1, "conv": "dm:a:b"},
        {"op": "group.create", "id": 1, "conv": "g:x", "title": "t" * 300},
        {"op": "group.create", "id": 1, "conv": "g:x", "public": 1},
        {"op": "group.add", "id": 1, "conv": "g:x", "users": []},
        {"op": "group.add", "id": 1, "conv": "g:x", "users": "bob"},
        {"op": "group.role", "id": 1, "conv": "g:x", "user": "b", "role": "owner"},
        {"op": "group.role", "id": 1, "conv": "g:x", "user": "b", "role": ["admin"]},
        {"op": "read", "id": 1, "conv": "g:x"},
        {"op": "watch", "id": 1, "users": ["no way"]},
    ],
)
def test_bad_fields_are_invalid_and_keep_the_id(codec: Codec, frame: dict[str, Any]) -> None:
    with pytest.raises(Invalid) as info:
        decode(codec, frame)
    assert info.value.frame_id == 1


@pytest.mark.parametrize("bad_id", [True, 1.5, "x" * 65, [1], 2**64])
def test_bad_ids_are_invalid_without_an_id(codec: Codec, bad_id: object) -> None:
    with pytest.raises(Invalid) as info:
        decode(codec, {"op": "ping", "id": bad_id})
    assert info.value.frame_id is None


def test_body_over_max_body_is_too_large(codec: Codec) -> None:
    decode(codec, {"op": "send", "conv": "dm:a:b", "cmid": "c", "body": "x" * 90})
    with pytest.raises(TooLarge):
        decode(codec, {"op": "send", "conv": "dm:a:b", "cmid": "c", "body": "x" * 101})


@pytest.mark.parametrize(
    "body",
    [b"bytes", {1: "int key"}, cbor2.CBORTag(1000, 1), float("inf"), cbor2.undefined],
    ids=["bytes", "int-key", "tag", "inf", "undefined"],
)
def test_cbor_only_bodies_are_invalid(body: object) -> None:
    codec = Codec(Encoding.CBOR, Limits())
    with pytest.raises(Invalid):
        codec.decode(cbor2.dumps({"op": "send", "conv": "dm:a:b", "cmid": "c", "body": body}))


def test_deeply_nested_body_is_refused_without_recursion(codec: Codec) -> None:
    body: Any = "leaf"
    for _ in range(70):
        body = [body]
    with pytest.raises(ImcoreError):
        Codec(codec.encoding, Limits()).decode(
            dump(codec.encoding, {"op": "send", "conv": "dm:a:b", "cmid": "c", "body": body})
        )


def test_json_encodes_text_and_cbor_binary() -> None:
    ack = Ack(conv="dm:a:b", cmid="c", seq=1, ts=2, id=9)
    text = Codec(Encoding.JSON, Limits()).encode(ack)
    binary = Codec(Encoding.CBOR, Limits()).encode(ack)
    assert isinstance(text, str)
    assert isinstance(binary, bytes)
    assert (
        json.loads(text)
        == cbor2.loads(binary)
        == {
            "op": "ack",
            "conv": "dm:a:b",
            "cmid": "c",
            "seq": 1,
            "ts": 2,
            "dup": False,
            "id": 9,
        }
    )


def test_membership_event_carries_sys_instead_of_body() -> None:
    event = Event(
        conv="g:x", seq=2, ts=5, sender="a", dev="d", at=9, sys=SysChange(type="add", users=("b",))
    )
    wire = event.to_wire()
    assert wire["sys"] == {"type": "add", "users": ["b"]}
    assert "body" not in wire
    assert "op" not in event.to_wire(op=False)


def test_role_frame(codec: Codec) -> None:
    frame = decode(codec, {"op": "group.role", "conv": "g:x", "user": "b", "role": "admin"})
    assert frame == GroupRole(conv="g:x", user="b", role="admin")
