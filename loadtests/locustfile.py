"""Locust users that speak the imcore protocol (JSON over WebSocket, websocket-client).

    locust -f loadtests/locustfile.py --host ws://127.0.0.1:8765/ws

Reported request types (the web UI and CSV show them): `hello`, `send→ack` (until the ack),
`deliver` (from a send to its push at another member, timed by the body), `sync`, and
failures named by error code. Settings, as environment variables:

    IMCORE_AUTH_SECRET   the server's secret, to mint tokens (or IMCORE_TOKENS_FILE: a JSON
                         map user -> token made with `imcore-admin token`)
    IMCORE_DM_USERS      users DirectChatters pick peers among (default 200)
    IMCORE_GROUP_SIZE    members per GroupChatter group (default 10)
    IMCORE_WATCH         users each Lurker watches (default 20)
    IMCORE_DROP_EVERY    a Reconnector drops its connection about every N sends (default 20)

Weights: locust's own `--class-picker`, or `LOCUST_USER_CLASSES`; the defaults below favour
lurkers as real chat traffic does.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import jwt
import websocket
from gevent.event import AsyncResult
from locust import User, between, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checker import StreamChecker

DM_USERS = int(os.environ.get("IMCORE_DM_USERS", "200"))
GROUP_SIZE = int(os.environ.get("IMCORE_GROUP_SIZE", "10"))
WATCH = int(os.environ.get("IMCORE_WATCH", "20"))
DROP_EVERY = int(os.environ.get("IMCORE_DROP_EVERY", "20"))
_serial = itertools.count()
_tokens: dict[str, str] | None = None


def token_for(user: str) -> str:
    global _tokens
    if _tokens is None and os.environ.get("IMCORE_TOKENS_FILE"):
        _tokens = json.loads(Path(os.environ["IMCORE_TOKENS_FILE"]).read_text())
    if _tokens is not None:
        return _tokens[user]
    secret = os.environ["IMCORE_AUTH_SECRET"]
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, secret, algorithm="HS256")


def report(name: str, started: float, length: int = 0, exception: Exception | None = None) -> None:
    events.request.fire(
        request_type="chat",
        name=name,
        response_time=(time.time() - started) * 1000,
        response_length=length,
        exception=exception,
        context={},
    )


class ProtocolError(Exception):
    pass


class ChatClient:
    """One connection: a reader greenlet routes replies by id and times pushes."""

    def __init__(self, url: str, user: str, device: str, checker: StreamChecker | None = None):
        self.url, self.user, self.device, self.checker = url, user, device, checker
        self.ws: websocket.WebSocket | None = None
        self.pending: dict[int, tuple[AsyncResult, float, str, frozenset[str]]] = {}
        self.ids = itertools.count(1)
        self.reader: gevent.Greenlet | None = None

    def connect(self) -> dict[str, Any]:
        started = time.time()
        self.ws = websocket.create_connection(self.url, subprotocols=["imcore.v1.json"])
        self.reader = gevent.spawn(self._read)
        hello = {"v": 1, "token": token_for(self.user), "device": self.device}
        welcome = self.request("hello", hello)
        report(
            "hello",
            started,
            exception=None if welcome.get("op") == "welcome" else ProtocolError(str(welcome)),
        )
        return welcome

    def close(self) -> None:
        if self.reader is not None:
            self.reader.kill(block=False)
        if self.ws is not None:
            self.ws.close()
        self.ws = None

    def request(
        self,
        op: str,
        fields: dict[str, Any],
        name: str | None = None,
        expected: frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """Send a frame and wait for its reply; error codes in `expected` are not failures."""
        assert self.ws is not None
        frame_id = next(self.ids)
        result: AsyncResult = AsyncResult()
        self.pending[frame_id] = (result, time.time(), name or op, expected)
        self.ws.send(json.dumps({"op": op, "id": frame_id, **fields}))
        reply: dict[str, Any] = result.get(timeout=30)
        return reply

    def _read(self) -> None:
        assert self.ws is not None
        while True:
            try:
                frame = json.loads(self.ws.recv())
            except (websocket.WebSocketException, OSError, ValueError):
                return
            if "id" in frame:
                result, started, name, expected = self.pending.pop(
                    frame["id"], (None, 0.0, "", frozenset())
                )
                if result is None:
                    continue
                if frame["op"] == "error" and frame["code"] not in expected:
                    report(
                        f"error:{frame['code']}", started, exception=ProtocolError(frame["message"])
                    )
                elif name in ("send→ack", "sync"):
                    report(name, started, len(json.dumps(frame)))
                result.set(frame)
            elif frame["op"] == "msg":
                self._push(frame)

    def _push(self, msg: dict[str, Any]) -> None:
        body = msg.get("body")
        if isinstance(body, dict) and "t" in body and msg["from"] != self.user:
            report("deliver", body["t"])
        if self.checker is not None:
            problem = self.checker.seen(msg["conv"], msg["seq"])
            if problem:
                report("gap or duplicate", time.time(), exception=ProtocolError(problem))
        if self.ws is not None:
            self.ws.send(json.dumps({"op": "recv", "conv": msg["conv"], "seq": msg["seq"]}))

    def send(self, conv: str) -> dict[str, Any]:
        body = {"t": time.time(), "text": "x" * 60}
        cmid = f"{self.device}-{next(_serial)}"
        return self.request("send", {"conv": conv, "cmid": cmid, "body": body}, name="send→ack")


class ChatUser(User):
    abstract = True
    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        self.n = next(_serial)
        self.client = ChatClient(self.host, self.name(), f"locust{self.n}")
        self.client.connect()

    def on_stop(self) -> None:
        self.client.close()

    def name(self) -> str:
        return f"u{next(_serial) % DM_USERS}"


class DirectChatter(ChatUser):
    """Direct messages between random pairs."""

    weight = 3

    @task
    def chat(self) -> None:
        me, peer = self.client.user, f"u{random.randrange(DM_USERS)}"
        a, b = sorted((me, peer))
        self.client.send(f"dm:{a}:{b}")


class GroupChatter(ChatUser):
    """Members of public groups of IMCORE_GROUP_SIZE; one sends, all receive."""

    weight = 2

    def name(self) -> str:
        return f"g{next(_serial)}"

    def on_start(self) -> None:
        super().on_start()
        self.conv = f"g:load{self.n // GROUP_SIZE}"
        create = {"conv": self.conv, "public": True}
        created = self.client.request("group.create", create, expected=frozenset({"conflict"}))
        if created.get("code") == "conflict":  # another member made it first
            self.client.request("group.join", {"conv": self.conv}, expected=frozenset({"conflict"}))

    @task
    def chat(self) -> None:
        self.client.send(self.conv)


class Lurker(ChatUser):
    """Connects, watches presence, only reads: the bulk of real users."""

    weight = 5
    wait_time = between(5, 10)

    def on_start(self) -> None:
        super().on_start()
        users = [f"u{random.randrange(DM_USERS)}" for _ in range(WATCH)]
        self.client.request("watch", {"users": list(dict.fromkeys(users))})

    @task
    def idle(self) -> None:
        pass


class Reconnector(ChatUser):
    """Drops its connection at random and resumes with sync; reports gaps and duplicates."""

    weight = 1

    def on_start(self) -> None:
        self.checker = StreamChecker()
        self.n = next(_serial)
        self.me = f"r{self.n}"
        self.conv = f"dm:{self.me}:{self.me}"
        self.client = ChatClient(self.host, self.me, "reconnector", self.checker)
        self.client.connect()

    @task
    def chat(self) -> None:
        self.client.send(self.conv)
        if random.randrange(DROP_EVERY) == 0:
            self.client.close()
            self.client = ChatClient(self.host, self.me, "reconnector", self.checker)
            self.client.connect()
            after = self.checker.resume_from(self.conv)
            batch = self.client.request("sync", {"conv": self.conv, "after": after, "limit": 1000})
            for event in batch.get("msgs", []):
                problem = self.checker.seen(self.conv, event["seq"])
                if problem:
                    report("gap or duplicate", time.time(), exception=ProtocolError(problem))
