"""The frame format (`imcore.wsframes`) against wsproto, an independent implementation of
RFC 6455: frames built here read in wsproto as built, and frames wsproto builds (masked
with a random key by a client, unmasked by a server) parse here as sent, however the bytes
are cut."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, Event, Ping, TextMessage

from imcore.wsframes import OP_BINARY, OP_PING, OP_TEXT, frame, parse

payloads = st.one_of(
    st.binary(max_size=300),
    st.integers(min_value=120, max_value=70_000).map(lambda n: bytes(range(256)) * (n // 256)),
)


def events(of: ConnectionType, data: bytes) -> list[Event]:
    connection = Connection(of)
    connection.receive_data(data)
    return list(connection.events())


@given(payloads, st.booleans())
def test_a_frame_built_here_reads_in_wsproto_as_built(payload: bytes, text: bool) -> None:
    if text:
        message = payload.decode("latin-1")
        assert events(ConnectionType.SERVER, frame(message.encode(), OP_TEXT, masked=True)) == [
            TextMessage(message)
        ]
    else:  # and as a server sends it, unmasked
        assert events(ConnectionType.CLIENT, frame(payload, OP_BINARY)) == [BytesMessage(payload)]


@given(st.lists(payloads, min_size=1, max_size=5), st.sampled_from(list(ConnectionType)), st.data())
def test_frames_wsproto_builds_parse_here_as_sent(
    sent: list[bytes], sender: ConnectionType, data: st.DataObject
) -> None:
    connection = Connection(sender)  # a client masks with a random key, a server does not
    stream = b"".join(connection.send(BytesMessage(p)) + connection.send(Ping(b"p")) for p in sent)
    cut = data.draw(st.integers(0, len(stream)))
    first, used = parse(stream[:cut])
    rest, used_after = parse(stream[used:])
    assert used + used_after == len(stream)
    expected = [f for p in sent for f in ((OP_BINARY, p), (OP_PING, b"p"))]
    assert first + rest == expected
