"""The floor: a minimal trio WebSocket server that does only the socket work of a benchmark.

    python tools/floor.py [--port 0]

Prints `floor listening on ws://127.0.0.1:PORT/ws` and serves until killed. A client joins
the room named in its path (`/ws?room=g1`). Each data message it sends is answered with a
small fixed ack, and its payload is framed once and queued for every member of the room,
the sender included (as imcore pushes to the sending connection too). One writer task
per connection writes everything queued in one `send_all`; one reader
task parses and unmasks frames. No protocol, no validation, no ordering, no durability:
what imcore does beyond this is what the benchmarks measure as the ratio to this floor.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import resource
import sys
from collections import deque
from pathlib import Path

import cbor2
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imcore.wsframes import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, frame, parse

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ACK = frame(cbor2.dumps({"op": "ack", "id": 0}), OP_BINARY)


class Conn:
    __slots__ = ("lot", "queue", "room", "stream")

    def __init__(self, stream: trio.SocketStream, room: set[Conn]) -> None:
        self.stream = stream
        self.room = room
        self.queue: deque[bytes] = deque()
        self.lot = trio.lowlevel.ParkingLot()

    def put(self, data: bytes) -> None:
        self.queue.append(data)
        if len(self.queue) == 1:
            self.lot.unpark_all()

    async def write(self) -> None:
        queue = self.queue
        while True:
            while not queue:
                await self.lot.park()
            data = b"".join(queue)
            queue.clear()
            await self.stream.send_all(data)

    async def read(self, buf: bytearray) -> None:
        while True:
            frames, used = parse(buf)  # the payloads come unmasked
            del buf[:used]
            for opcode, payload in frames:
                if opcode in (OP_TEXT, OP_BINARY):
                    self.put(ACK)
                    push = frame(payload, opcode)  # once per message
                    for member in self.room:  # the sender too, as imcore does
                        member.put(push)
                elif opcode == OP_PING:
                    self.put(frame(payload, OP_PONG))
                elif opcode == OP_CLOSE:
                    return
            chunk = await self.stream.receive_some(1 << 18)
            if not chunk:
                return
            buf += chunk


rooms: dict[str, set[Conn]] = {}


async def handle(stream: trio.SocketStream) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    path = lines[0].split()[1]
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
    reply = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept.decode()}",
    ]
    if "sec-websocket-protocol" in headers:
        reply.append(f"Sec-WebSocket-Protocol: {headers['sec-websocket-protocol'].split(',')[0]}")
    await stream.send_all(("\r\n".join(reply) + "\r\n\r\n").encode())
    name = path.partition("room=")[2].partition("&")[0]
    room = rooms.setdefault(name, set())
    conn = Conn(stream, room)
    room.add(conn)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.write)
            await conn.read(bytearray(rest))
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        room.discard(conn)
        await stream.aclose()


async def main(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]
    print(f"floor listening on ws://127.0.0.1:{bound}/ws", flush=True)
    await trio.serve_listeners(handle, listeners)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    trio.run(main, parser.parse_args().port)
