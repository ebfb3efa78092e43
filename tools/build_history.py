"""A data directory holding N stored events, made by bulk load instead of through the
protocol, for the history-store benchmarks (tools/bench_history.py; never run as a test).

    python tools/build_history.py build DIR [--events 10000000] [--convs 10000] [--verify]
    python tools/build_history.py check DIR [--events N] [--convs C]

`build` writes exactly what a server leaves after committing those events and stopping:

    DIR/history.sqlite3       every event (`HistoryStore.write_events`, then `sync`), meta lsn N
    DIR/snapshots/<N>.snap    a format 3 snapshot at LSN N: per conversation head, ts_last,
                              floor 1, roster, no cursors, `sys_seqs` and `sent_by` built
                              from the events; then the cmid filter of every message
    DIR/wal/<N + 1>.wal       the empty segment a stopping server rolls to
    DIR/FORMAT                "2\\n" (`datadir.write_format`)
    DIR/secret                tools.benchlib.SECRET, so `imcore serve --data-dir DIR` needs
                              no `--auth-secret` to accept the benchmarks' tokens

and its figures (events, body bytes, timings, sizes) beside it, in DIR.build.json.

The events are spread as in tools/bench_store.py: one group (`g:big`, 200 members, created
by m0 at LSN 1) takes 10% of the messages, and the rest fall at random over convs - 1
direct conversations (`dm:u<2i>:u<2i+1>`, i = 1 .. convs - 1; each message's sender
alternates with its seq). Every event is `tools.benchlib.message_event` (bodies of about
48 bytes of JSON). The order is the commit order a server would have had: the event at LSN
k has ts k, conversations interleaved at random (seeded, so every build of the same size
is the same), and the store is written in transactions of 5,000 events in that order, as
the checkpoint writes them, so its pages fill as a server's would.

The live state is built alongside (arrays of seqs, a `CmidFilter` fed every cmid in commit
order) rather than by applying each event to a `Chat`. `--verify` also builds the state
the slow way, through `Chat.apply` as recovery does, and requires the two snapshots to be
byte for byte the same (use it with small N: it holds every event in memory).

`check` starts a real server (tools.benchlib.Server) on a copy of DIR and checks, for every
conversation, the `welcome` summary of each party (head, floor, unread), a `sync` of every
event from seq 1 against the events rebuilt from the seed, that a resend of an old cmid is
answered `dup: true` with its original seq and ts, and that a new cmid gets the next seq.
It connects once per user: use it on a small directory (say 20,000 events, 100
conversations).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from imcore.core import Chat, Event, Limits, Outcome, auth
from imcore.core.conversation import SEQ_ARRAY, ConversationState, seq_bytes
from imcore.core.dedup import CmidFilter
from imcore.core.frames import GroupCreate
from imcore.core.snapshot import SnapshotEncoder
from imcore.core.wal_format import SEGMENT_MAGIC
from imcore.server.datadir import write_format
from imcore.server.files import Files
from imcore.server.layout import (
    segment_path,
    snapshot_dir,
    snapshot_path,
    snapshot_temp_path,
    wal_dir,
)
from imcore.server.store import HistoryStore, store_files, store_path
from imcore.wsclient import RawWebSocket
from tools.benchlib import SECRET, Server, message_event

if TYPE_CHECKING:
    from collections.abc import Iterator

GROUP = "g:big"
GROUP_SHARE = 0.10  # of the messages: as in tools/bench_store.py
GROUP_MEMBERS = 200
SEED = 16  # the number: every build of one size holds the same events
#: Events per store transaction: the checkpoint's batch (server/checkpoint.py BATCH).
BATCH = 5000
AT_BASE = 1_796_000_000_000  # `at` of the event of ts t is AT_BASE + t (as message_event)
DEVICE = "phone"


def conv_names(convs: int) -> list[str]:
    """The conversations of a build: the group first, then the direct ones."""
    return [GROUP] + [f"dm:u{2 * i}:u{2 * i + 1}" for i in range(1, convs)]


def group_members() -> list[str]:
    return [f"m{k}" for k in range(GROUP_MEMBERS)]


def dm_parties(conv: str) -> tuple[str, str]:
    _, a, b = conv.split(":")
    return a, b


def create_event() -> tuple[Event, Chat]:
    """The group's `create` event (LSN 1, ts 1) exactly as a server sequences it, and a
    Chat holding it (for its committed roster)."""
    chat = Chat(Limits())
    members = group_members()
    cmd = GroupCreate(conv=GROUP, members=tuple(members[1:]))
    outcome = chat.submit(members[0], DEVICE, cmd, AT_BASE + 1)
    assert isinstance(outcome, Outcome)
    assert isinstance(outcome.record, Event)
    chat.apply(outcome.record, 1)
    return outcome.record, chat


def commit_order(events: int, convs: int) -> Iterator[tuple[int, Event, int]]:
    """(conversation index into `conv_names`, event, its body's bytes as JSON) of every
    stored event, in LSN order; the event at LSN k has ts k."""
    if convs < 2 or events < 1:
        raise ValueError("a build needs at least 2 conversations and 1 event")
    names = conv_names(convs)
    heads = [0] * convs
    rng = random.Random(SEED)
    create, _ = create_event()
    heads[0] = 1
    yield 0, create, 0
    dms = convs - 1
    for ts in range(2, events + 1):
        if rng.random() < GROUP_SHARE:
            c = 0
            sender = f"m{rng.randrange(GROUP_MEMBERS)}"
            seq = heads[0] = heads[0] + 1
        else:
            c = 1 + rng.randrange(dms)
            seq = heads[c] = heads[c] + 1
            sender = f"u{2 * c + seq % 2}"
        event, size = message_event(names[c], seq, ts, sender)
        yield c, event, size


@dataclass(slots=True)
class Tally:
    """One conversation's live state, kept as the events go by."""

    first_lsn: int = 0  # where its first event is: a Chat holds conversations in that order
    head: int = 0
    ts_last: int = 0
    sys_seqs: array[int] = field(default_factory=lambda: array(SEQ_ARRAY))
    sent_by: dict[str, array[int]] = field(default_factory=dict)


@dataclass(slots=True)
class Built:
    events: int = 0
    convs: int = 0
    body_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def report_path(data_dir: Path) -> Path:
    """Where `build` leaves its figures (events, body bytes, timings): beside the data
    directory, which holds only what a server leaves."""
    return data_dir.with_name(data_dir.name + ".build.json")


def allocated(paths: list[Path]) -> int:
    """Bytes the files take on disk (allocated blocks)."""
    return sum(p.stat().st_blocks * 512 for p in paths if p.exists())


def build(data_dir: Path, events: int, convs: int, batch: int = BATCH) -> Built:
    """Make `data_dir` (which must not hold a data directory yet); see the module doc."""
    if store_path(data_dir).exists() or snapshot_dir(data_dir).exists():
        raise SystemExit(f"{data_dir} already holds a data directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    names = conv_names(convs)
    tallies = [Tally() for _ in names]
    cmids = CmidFilter()
    add_cmid = cmids.add
    built = Built(events=events)
    started = time.perf_counter()
    store = HistoryStore(store_path(data_dir))
    writing = 0.0
    lsn = 0
    stream = commit_order(events, convs)
    while True:
        chunk: list[Event] = []
        for c, event, size in islice(stream, batch):
            t = tallies[c]
            if not t.head:
                t.first_lsn = event.ts  # ts = LSN in a build
            t.head, t.ts_last = event.seq, event.ts
            if event.sys is not None:
                t.sys_seqs.append(event.seq)
            else:
                mine = t.sent_by.get(event.sender)
                if mine is None:
                    mine = t.sent_by[event.sender] = array(SEQ_ARRAY)
                mine.append(event.seq)
                assert event.cmid is not None
                add_cmid(event.conv, event.sender, event.cmid)
                built.body_bytes += size
            chunk.append(event)
        if not chunk:
            break
        lsn += len(chunk)
        t0 = time.perf_counter()
        store.write_events(chunk, lsn)
        writing += time.perf_counter() - t0
    t0 = time.perf_counter()
    store.sync()
    store.close()
    built.seconds["store_sync"] = time.perf_counter() - t0
    built.seconds["store_write"] = writing
    built.seconds["events_and_state"] = time.perf_counter() - started - writing
    assert lsn == events
    _, group = create_event()
    t0 = time.perf_counter()
    path = write_snapshot(data_dir, events, names, tallies, group, cmids)
    built.seconds["snapshot"] = time.perf_counter() - t0
    finish_data_dir(data_dir, events)
    built.seconds["total"] = time.perf_counter() - started
    built.convs = sum(1 for t in tallies if t.head)
    built.sizes = {
        "store": allocated(store_files(data_dir)),
        "snapshot": allocated([path]),
        "filter": cmids.nbytes,
        "seq_arrays": sum(
            len(t.sys_seqs) * 4 + sum(len(a) * 4 for a in t.sent_by.values()) for t in tallies
        ),
    }
    return built


def conversation_state(conv: str, tally: Tally, group: Chat) -> ConversationState:
    roster = group.capture(GROUP).roster if conv == GROUP else None
    return ConversationState(
        conv,
        tally.head,
        tally.ts_last,
        1,
        roster,
        {},
        {},
        seq_bytes(tally.sys_seqs),
        {sender: seq_bytes(seqs) for sender, seqs in tally.sent_by.items()},
    )


def write_snapshot(
    data_dir: Path, lsn: int, names: list[str], tallies: list[Tally], group: Chat, cmids: CmidFilter
) -> Path:
    """The snapshot a server would write at `lsn`: conversations in the order of their
    first event (a Chat's order), then the filter; temp file, fsync, rename, as the
    snapshotter does."""
    order = sorted((c for c, t in enumerate(tallies) if t.head), key=lambda c: tallies[c].first_lsn)
    encoder = SnapshotEncoder(lsn, lsn)  # the clock: ts = LSN, so the last ts is `lsn`
    pieces = [encoder.begin()]
    pieces += [encoder.conversation(conversation_state(names[c], tallies[c], group)) for c in order]
    pieces += [encoder.filter(cmids.to_state()), encoder.end()]
    return write_file_durably(snapshot_dir(data_dir), lsn, b"".join(pieces))


def write_file_durably(directory: Path, lsn: int, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    temp, final = snapshot_temp_path(directory, lsn), snapshot_path(directory, lsn)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    temp.replace(final)
    fsync_dir(directory)
    return final


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_data_dir(data_dir: Path, lsn: int) -> None:
    """The rest of what a stopped server leaves: the empty segment it rolled to at its last
    snapshot, the FORMAT file, and the token secret."""
    directory = wal_dir(data_dir)
    directory.mkdir(exist_ok=True)
    segment = segment_path(directory, lsn + 1)
    segment.write_bytes(SEGMENT_MAGIC)
    fd = os.open(segment, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)
    write_format(data_dir, Files())
    secret = data_dir / "secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(SECRET + "\n")


# --- --verify: the same state through Chat.apply ----------------------------------------------


def verify(data_dir: Path, events: int, convs: int) -> None:
    """Require the built snapshot to be the one a Chat fed every event (as recovery feeds
    it the log) encodes, byte for byte, and the store to hold every event.

    Raises:
        SystemExit: they differ.
    """
    chat = Chat(Limits())
    stored: dict[str, list[Event]] = {}
    for lsn, (_, event, _) in enumerate(commit_order(events, convs), 1):
        chat.apply(event, lsn)
        stored.setdefault(event.conv, []).append(event)
    encoder = SnapshotEncoder(events, chat.clock.value)
    pieces = [encoder.begin()]
    pieces += [encoder.conversation(chat.capture(conv)) for conv in chat.conversation_ids()]
    pieces += [encoder.filter(chat.capture_filter()), encoder.end()]
    expected = b"".join(pieces)
    found = snapshot_path(snapshot_dir(data_dir), events).read_bytes()
    if found != expected:
        raise SystemExit("verify: the built snapshot is not the one Chat.apply makes")
    store = HistoryStore(store_path(data_dir))
    try:
        if store.lsn != events:
            raise SystemExit(f"verify: the store's lsn is {store.lsn}, not {events}")
        for conv, mine in stored.items():
            if store.read_page(conv, 1, len(mine)) != mine:
                raise SystemExit(f"verify: the store's events of {conv} differ")
    finally:
        store.close()
    print(f"verify: snapshot identical to Chat.apply's ({len(found):,} bytes); store holds all")


# --- check: a real server on a copy ------------------------------------------------------------


def expected_events(events: int, convs: int) -> dict[str, list[Event]]:
    found: dict[str, list[Event]] = {}
    for _, event, _ in commit_order(events, convs):
        found.setdefault(event.conv, []).append(event)
    return found


class Client:
    """One CBOR connection that asks and waits for the reply (by id)."""

    def __init__(self, ws: RawWebSocket, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self._next = 0
        self._frames: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, port: int, user: str) -> Client:
        ws = await RawWebSocket.connect("127.0.0.1", port, "/ws", "imcore.v1.cbor")
        token = auth.mint(user, SECRET, now_ms=int(time.time() * 1000))
        hello = {"op": "hello", "id": 0, "v": 1, "token": token, "device": "d", "recv": False}
        await ws.send(cbor2.dumps(hello))
        while True:
            for data in await ws.receive():
                frame = cbor2.loads(data)
                if frame.get("op") == "welcome":
                    return cls(ws, frame)
                raise SystemExit(f"check: {user} got {frame} instead of welcome")

    async def request(self, **fields: Any) -> dict[str, Any]:
        self._next += 1
        frame_id = self._next
        await self.ws.send(cbor2.dumps({**fields, "id": frame_id}))
        while True:
            for i, frame in enumerate(self._frames):
                if frame.get("id") == frame_id and frame.get("op") != "msg":
                    return self._frames.pop(i)
            self._frames += [cbor2.loads(d) for d in await self.ws.receive()]
            self._frames = [f for f in self._frames if f.get("op") != "msg"]  # own echoes


def unread(events: list[Event], user: str) -> int:
    """Messages of others: what `welcome` must say with no read cursor (spec §3)."""
    return sum(1 for e in events if e.sys is None and e.sender != user)


async def check_server(port: int, wanted: dict[str, list[Event]]) -> dict[str, int]:
    counts = {"conversations": 0, "users": 0, "events_synced": 0, "dups": 0}
    for conv, mine in wanted.items():
        users = group_members() if conv == GROUP else list(dm_parties(conv))
        head = mine[-1].seq
        for user in users:
            client = await Client.open(port, user)
            counts["users"] += 1
            (summary,) = [s for s in client.welcome["convs"] if s["conv"] == conv]
            got = (summary["head"], summary["floor"], summary["read"], summary["unread"])
            if got != (head, 1, 0, unread(mine, user)):
                raise SystemExit(f"check: {user} in {conv}: welcome says {got}")
            if user == users[0]:
                await check_sync(client, conv, mine)
                counts["events_synced"] += len(mine)
            first = next((e for e in mine if e.sys is None and e.sender == user), None)
            if first is not None and user in users[:2]:
                again = await client.request(op="send", conv=conv, cmid=first.cmid, body="retry")
                got_dup = (again.get("op"), again.get("seq"), again.get("ts"), again.get("dup"))
                if got_dup != ("ack", first.seq, first.ts, True):
                    raise SystemExit(f"check: resend of {first.cmid} in {conv}: {again}")
                counts["dups"] += 1
            await client.ws.aclose()
        client = await Client.open(port, users[0])
        fresh = await client.request(op="send", conv=conv, cmid="fresh-cmid", body="new")
        if (fresh.get("op"), fresh.get("seq"), fresh.get("dup", False)) != ("ack", head + 1, False):
            raise SystemExit(f"check: a new cmid in {conv}: {fresh}")
        await client.ws.aclose()
        counts["conversations"] += 1
    return counts


async def check_sync(client: Client, conv: str, mine: list[Event]) -> None:
    """Every event of `conv` from seq 1, page by page, against the events it must hold."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        batch = await client.request(op="sync", conv=conv, after=after, limit=1000)
        if batch.get("op") != "batch":
            raise SystemExit(f"check: sync of {conv} after {after}: {batch}")
        found += batch["msgs"]
        if not batch["more"]:
            break
        after = batch["msgs"][-1]["seq"]
    wanted = [e.to_wire(op=False) for e in mine]
    if found != wanted:
        bad = next(i for i, (a, b) in enumerate(zip(found, wanted, strict=False)) if a != b)
        raise SystemExit(f"check: sync of {conv}: {len(found)} events, first difference at {bad}")


def check(data_dir: Path, events: int, convs: int) -> None:
    wanted = expected_events(events, convs)
    with tempfile.TemporaryDirectory(prefix="check-history-") as tmp:
        copy = Path(tmp) / "data"
        shutil.copytree(data_dir, copy)
        server = Server(copy, None)
        try:
            counts = trio.run(check_server, server.port, wanted)
        finally:
            code = server.stop()
    if code != 0:
        raise SystemExit(f"check: the server exited with {code}")
    print("check passed:", json.dumps(counts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "check"):
        p = commands.add_parser(name)
        p.add_argument("dir", type=Path)
        p.add_argument("--events", type=int, default=10_000_000)
        p.add_argument("--convs", type=int, default=10_000)
        if name == "build":
            p.add_argument("--verify", action="store_true", help="also build through Chat.apply")
    args = parser.parse_args()
    if args.command == "check":
        check(args.dir, args.events, args.convs)
        return
    built = build(args.dir, args.events, args.convs)
    row = {
        "events": built.events,
        "convs": built.convs,
        "body_bytes_per_event": built.body_bytes / built.events,
        **{f"{k}_s": v for k, v in built.seconds.items()},
        **{f"{k}_mb": v / 1e6 for k, v in built.sizes.items()},
        "store_bytes_per_event": built.sizes["store"] / built.events,
        "events_per_s": built.events / built.seconds["total"],
    }
    print(json.dumps(row))
    # Beside the directory, not in it: what the benchmarks need to know of the build.
    report_path(args.dir).write_text(json.dumps(row) + "\n")
    if args.verify:
        verify(args.dir, args.events, args.convs)


if __name__ == "__main__":
    main()
