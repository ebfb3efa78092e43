"""Random and mutated frames at a live connection: only error frames and the spec's close
codes come back, and the server keeps serving others."""

from __future__ import annotations

import contextlib
import json
import random
from typing import TYPE_CHECKING

import cbor2
import trio

from imcore.wsclient import RawWebSocket
from imcore.wsframes import OP_BINARY, OP_TEXT
from tests.helpers.client import open_client, token

if TYPE_CHECKING:
    from imcore.server import RunningServer

FRAMES = 3000
SPEC_CLOSES = {1000, 1001, 1009, 4000, 4001, 4002, 4003, 4008, 4029}
TEMPLATES = [
    {"op": "send", "id": 1, "conv": "dm:fuzz:peer", "cmid": "c", "body": {"t": "hi"}},
    {"op": "sync", "id": 2, "conv": "dm:fuzz:peer", "after": 0},
    {"op": "group.create", "id": 3, "conv": "g:fz", "members": ["peer"]},
    {"op": "read", "id": 4, "conv": "dm:fuzz:peer", "seq": 1},
    {"op": "watch", "id": 5, "users": ["peer"]},
    {"op": "ping", "id": 6},
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(4)
        if kind == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif kind == 1:
            del buf[rng.randrange(len(buf) + 1) :]
        elif kind == 2:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randrange(1, 8))
        else:
            buf += rng.randbytes(rng.randrange(0, 16))
    return bytes(buf)


def frames(rng: random.Random, binary: bool) -> list[tuple[bytes, int]]:
    out = []
    for _ in range(50):
        template = rng.choice(TEMPLATES)
        data = cbor2.dumps(template) if binary else json.dumps(template).encode()
        if rng.random() < 0.8:
            data = mutate(rng, data)
        if rng.random() < 0.1:
            data = rng.randbytes(rng.randrange(0, 64))
        if not binary:  # text frames must be UTF-8, or the WebSocket layer itself closes (1007)
            data = data.decode("utf-8", "replace").encode()
        out.append((data, OP_BINARY if binary else OP_TEXT))
    return out


def encode(frame: dict[str, object], binary: bool) -> tuple[bytes, int]:
    if binary:
        return cbor2.dumps(frame), OP_BINARY
    return json.dumps(frame).encode(), OP_TEXT


async def test_fuzzed_frames_get_errors_or_spec_closes_and_others_carry_on(
    server: RunningServer,
) -> None:
    rng = random.Random("fuzz")
    closes: dict[int, int] = {}
    errors: dict[str, int] = {}
    with trio.fail_after(120):
        async with open_client(server, "peer") as peer:
            sent = 0
            while sent < FRAMES:
                binary = rng.random() < 0.5
                ws = await RawWebSocket.connect(
                    "127.0.0.1", server.port, "/ws", "imcore.v1.cbor" if binary else None
                )
                hello = {"op": "hello", "id": 0, "v": 1, "token": token("fuzz"), "device": "d"}
                await ws.send(
                    cbor2.dumps(hello) if binary else json.dumps(hello).encode(),
                    OP_BINARY if binary else OP_TEXT,
                )
                with contextlib.suppress(ConnectionError, trio.BrokenResourceError):
                    await ws.receive()
                    while sent < FRAMES:
                        batch = frames(rng, binary)
                        for data, opcode in batch:
                            await ws.send(data, opcode)
                        sent += len(batch)
                        # a ping after the batch: its pong means every answer is in
                        barrier: dict[str, object] = {"op": "ping", "id": f"barrier{sent}"}
                        await ws.send(*encode(barrier, binary))
                        done = False
                        while not done:
                            for reply in await ws.receive():
                                frame = cbor2.loads(reply) if binary else json.loads(reply)
                                if frame.get("op") == "error":
                                    errors[frame["code"]] = errors.get(frame["code"], 0) + 1
                                done = done or frame.get("id") == barrier["id"]
                await ws.aclose()
                if ws.closed_code is not None:
                    closes[ws.closed_code] = closes.get(ws.closed_code, 0) + 1
                assert (await peer.request(op="ping"))["op"] == "pong"
    print(f"\nerrors by code: {errors}; closes by code: {closes}")
    assert "internal" not in errors
    assert set(closes) <= SPEC_CLOSES
    assert sum(errors.values()) > FRAMES // 4
