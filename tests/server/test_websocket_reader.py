"""The WebSocket reader takes plain frames itself and leaves the rest to wsproto: whatever
the frames and however the bytes are cut into reads, what comes out is what wsproto alone
makes of the same bytes."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from imcore.server.websocket import Reader, Received
from imcore.wsframes import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT

MAX = 100_000


def frame(
    payload: bytes, opcode: int, *, fin: bool = True, mask: bytes | None = b"k3y!", rsv: int = 0
) -> bytes:
    """One client frame, as a client would send it (masked unless `mask` is None)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask is None:
        return head + payload
    key = (mask * (n // 4 + 1))[:n]
    return head + mask + bytes(a ^ b for a, b in zip(payload, key, strict=True))


def reader(max_message: int = MAX) -> Reader:
    return Reader(Protocol(ConnectionType.SERVER), max_message)


def by_wsproto_alone(data: bytes, cuts: list[int], max_message: int) -> list[Received]:
    """What a bare wsproto connection makes of `data` read in the same pieces, in the shapes
    `Reader` gives: the oracle for the reader, sharing none of its code.

    wsproto itself hands a message over in pieces and knows no size limit, so three rules of
    the reader's are written out here: a message's pieces are joined into one str or bytes;
    a message that grows past `max_message` bytes (of UTF-8, for text) reads, where it does,
    as `CloseConnection(1009, "message too big")`; after any close, messages are dropped
    and control frames still count.
    """
    protocol = Protocol(ConnectionType.SERVER)
    out: list[Received] = []
    pieces: list[bytes] = []  # of the message under way
    size = 0
    closed = False
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        protocol.receive_data(data[a:b])
        for event in protocol.events():
            if isinstance(event, (Ping, Pong, CloseConnection)):
                out.append(event)
                closed = closed or isinstance(event, CloseConnection)
            elif isinstance(event, (TextMessage, BytesMessage)) and not closed:
                piece = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
                pieces.append(piece)
                size += len(piece)
                if size > max_message:
                    out.append(CloseConnection(1009, "message too big"))
                    closed = True
                elif event.message_finished:
                    whole = b"".join(pieces)
                    out.append(whole.decode() if isinstance(event, TextMessage) else whole)
                    pieces, size = [], 0
    return out


def fed(data: bytes, cuts: list[int], r: Reader | None = None) -> list[Received]:
    """What `r` makes of `data` read in pieces, cut at `cuts`."""
    r = r or reader()
    out: list[Received] = []
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        out += r.feed(data[a:b])
    return out


payloads = st.one_of(
    st.binary(max_size=200),
    st.integers(min_value=120, max_value=70_000).map(lambda n: bytes(range(256)) * (n // 256)),
)
texts = st.text(max_size=80).map(str.encode)
masks = st.one_of(st.just(b"\0\0\0\0"), st.binary(min_size=4, max_size=4))


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A whole message, a fragmented one with a ping inside, or a control frame."""
    mask = draw(masks)
    kind = draw(st.sampled_from(["binary", "text", "fragmented", "ping", "pong"]))
    if kind == "binary":
        return frame(draw(payloads), OP_BINARY, mask=mask)
    if kind == "text":
        return frame(draw(texts), OP_TEXT, mask=mask)
    if kind in ("ping", "pong"):
        return frame(draw(st.binary(max_size=125)), OP_PING if kind == "ping" else OP_PONG)
    parts = draw(st.lists(st.binary(max_size=300), min_size=2, max_size=4))
    out = frame(parts[0], OP_BINARY, fin=False, mask=mask)
    for i, part in enumerate(parts[1:], 1):
        if i == 1:
            out += frame(b"inside", OP_PING)
        out += frame(part, OP_CONT, fin=i == len(parts) - 1, mask=mask)
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(messages(), min_size=1, max_size=12),
    st.one_of(st.just(MAX), st.integers(min_value=4, max_value=80_000)),
    st.data(),
)
def test_any_frames_cut_anywhere_read_as_wsproto_reads_them(
    frames: list[bytes], max_message: int, data: st.DataObject
) -> None:
    stream = b"".join(frames)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=8))))
    cuts = [c for c in cuts if 0 < c < len(stream)]
    expected = by_wsproto_alone(stream, cuts, max_message)
    r = reader(max_message)
    assert fed(stream, cuts, r) == expected
    if any(isinstance(e, CloseConnection) for e in expected):
        assert r.feed(frame(b"next", OP_BINARY)) == []  # 1009: no message is taken after it
    else:
        # Whole frames, every message complete: the next plain frame is taken here again.
        assert not r._with_wsproto
        assert r.feed(frame(b"next", OP_BINARY)) == [b"next"]


def test_a_plain_frame_is_unmasked_and_split_reads_are_joined() -> None:
    data = frame(b"hello", OP_BINARY) + frame("héllo".encode(), OP_TEXT)
    assert fed(data, list(range(1, len(data)))) == [b"hello", "héllo"]


def test_a_ping_between_plain_frames_keeps_its_place() -> None:
    data = frame(b"a", OP_BINARY) + frame(b"p", OP_PING) + frame(b"b", OP_BINARY)
    assert reader().feed(data) == [b"a", Ping(b"p"), b"b"]


def test_after_a_fragmented_message_plain_frames_are_taken_again() -> None:
    r = reader()
    first = frame(b"ab", OP_BINARY, fin=False) + frame(b"cd", OP_CONT)
    assert r.feed(first) == [b"abcd"]
    assert not r._with_wsproto
    assert r.feed(frame(b"e", OP_BINARY)) == [b"e"]


def test_a_whole_message_inside_a_fragmented_one_closes_1002() -> None:
    r = reader()
    assert r.feed(frame(b"ab", OP_BINARY, fin=False)) == []
    assert close_code(r.feed(frame(b"whole", OP_BINARY))) == 1002


def close_code(received: list[Received]) -> int | None:
    closes = [r.code for r in received if isinstance(r, CloseConnection)]
    return closes[0] if closes else None


def test_an_unmasked_client_frame_closes_1002() -> None:
    assert close_code(reader().feed(frame(b"x", OP_BINARY, mask=None))) == 1002


def test_a_reserved_bit_closes_1002() -> None:
    assert close_code(reader().feed(frame(b"x", OP_BINARY, rsv=0x40))) == 1002


def test_text_that_is_not_utf8_closes_1007_after_the_frames_before_it() -> None:
    data = frame(b"ok", OP_TEXT) + frame(b"\xff\xfe", OP_TEXT)
    received = reader().feed(data)
    assert received[0] == "ok"
    assert close_code(received) == 1007


def test_a_message_over_the_limit_closes_1009() -> None:
    assert close_code(reader(max_message=10).feed(frame(b"x" * 11, OP_BINARY))) == 1009
    assert reader(max_message=10).feed(frame(b"x" * 10, OP_BINARY)) == [b"x" * 10]


def test_the_end_of_the_stream_mid_frame_reads_as_1006() -> None:
    r = reader()
    assert r.feed(frame(b"hello", OP_BINARY)[:4]) == []
    assert close_code(r.feed(b"")) == 1006


def test_a_length_not_in_its_shortest_form_closes_1002() -> None:
    longer = bytes((0x82, 0x80 | 126, 0, 1)) + b"\0\0\0\0" + b"x"  # 1 byte, in 16 bits
    assert close_code(reader().feed(longer)) == 1002


def test_after_a_protocol_error_nothing_more_is_taken() -> None:
    r = reader()
    assert close_code(r.feed(frame(b"x", OP_BINARY, mask=None))) == 1002
    assert r.feed(frame(b"hi", OP_BINARY)) == []


def test_after_1009_messages_are_dropped_but_the_clients_close_is_read() -> None:
    r = reader(max_message=10)
    big = frame(b"y" * 20, OP_BINARY)
    assert r.feed(big[:5]) == []
    assert close_code(r.feed(big[5:] + frame(b"p", OP_PING))) == 1009
    assert r.feed(frame(b"ok", OP_BINARY)) == []  # no second 1009, no message
    close = frame(b"\x03\xf1", 0x8)  # the client's close, code 1009
    assert close_code(r.feed(close)) == 1009


def test_the_limit_counts_the_bytes_of_text() -> None:
    emoji = "\N{GRINNING FACE}" * 3  # 3 characters, 12 bytes
    parts = frame(emoji[:1].encode(), OP_TEXT, fin=False) + frame(emoji[1:].encode(), OP_CONT)
    assert close_code(reader(max_message=10).feed(parts)) == 1009
    assert reader(max_message=12).feed(parts) == [emoji]
