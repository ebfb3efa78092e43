from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio

from tests.helpers.client import Client, Frame, open_client

if TYPE_CHECKING:
    from imcore.server import RunningServer

G = "g:big"


async def collect_until(client: Client, last_seq: int) -> list[Frame]:
    """Every msg push of G up to `last_seq` (or up to the client's own removal)."""
    got: list[Frame] = []
    while True:
        msg = await client.next_push("msg")
        assert msg["conv"] == G
        got.append(msg)
        sys = msg.get("sys", {})
        removed = sys.get("type") in ("remove", "leave") and client.welcome["user"] in sys["users"]
        if msg["seq"] == last_seq or removed:
            return got


async def test_group_of_50_with_membership_changes_every_stream_gapless_and_as_sync(
    server: RunningServer,
) -> None:
    users = [f"u{i:02d}" for i in range(50)]
    owner, initial, joiners = users[0], users[1:40], users[40:]
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            clients = {u: await stack.enter_async_context(open_client(server, u)) for u in users}
            created = await clients[owner].request(
                op="group.create", conv=G, title="Big", public=True, members=initial
            )
            assert (created["op"], created["seq"]) == ("ok", 1)
            for u in joiners:
                assert (await clients[u].request(op="group.join", conv=G))["op"] == "ok"
            ok = await clients[owner].request(op="group.role", conv=G, user="u01", role="admin")
            assert ok["op"] == "ok"
            removal = await clients["u01"].request(op="group.remove", conv=G, users=["u02", "u03"])
            assert removal["op"] == "ok"
            assert (await clients["u04"].request(op="group.leave", conv=G))["op"] == "ok"

            senders = [u for u in users if u not in ("u02", "u03", "u04")][:12]

            async def chat(user: str) -> None:
                for i in range(5):
                    ack = await clients[user].request(
                        op="send", conv=G, cmid=f"{user}-{i}", body=f"{user} says {i}"
                    )
                    assert ack["op"] == "ack", ack

            async with trio.open_nursery() as nursery:
                for u in senders:
                    nursery.start_soon(chat, u)
            head = 1 + len(joiners) + 3 + len(senders) * 5

            log = await clients[owner].request(op="sync", conv=G, after=0, limit=1000)
            assert [m["seq"] for m in log["msgs"]] == list(range(1, head + 1))
            assert (log["head"], log["more"]) == (head, False)
            by_seq = {m["seq"]: m for m in log["msgs"]}

            joined_at = {m["sys"]["users"][0]: m["seq"] for m in log["msgs"] if _sys(m) == "join"}
            for user, client in clients.items():
                stream = await collect_until(client, head)
                first = joined_at.get(user, 1)
                seqs = [m["seq"] for m in stream]
                assert seqs == list(range(first, seqs[-1] + 1)), user
                assert all(m == {"op": "msg", **by_seq[m["seq"]]} for m in stream), user
                if user in ("u02", "u03", "u04"):
                    assert seqs[-1] < head
                else:
                    assert seqs[-1] == head

            info = await clients[owner].request(op="group.info", conv=G)
            members = {m["user"]: m["role"] for m in info["members"]}
            assert len(members) == 47
            assert (members["u00"], members["u01"], members["u05"]) == ("owner", "admin", "member")
            assert (info["owner"], info["title"], info["public"], info["head"]) == (
                owner,
                "Big",
                True,
                head,
            )
            # a removed member may no longer read or write
            refused = await clients["u02"].request(op="send", conv=G, cmid="x", body=1)
            assert refused["code"] == "forbidden"


def _sys(msg: Frame) -> str | None:
    sys = msg.get("sys")
    return None if sys is None else str(sys["type"])


async def test_a_readded_member_syncs_what_it_missed(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "own") as own, open_client(server, "mem") as mem:
            await own.request(op="group.create", conv="g:x", members=["mem"])
            await own.request(op="group.remove", conv="g:x", users=["mem"])
            await own.request(op="send", conv="g:x", cmid="while-away", body="missed")
            await own.request(op="group.add", conv="g:x", users=["mem"])
            seqs = [m["seq"] for m in await mem.next_msgs(3)]
            assert seqs == [1, 2, 4]  # no push while not a member
            batch = await mem.request(op="sync", conv="g:x", after=2)
            assert [m["seq"] for m in batch["msgs"]] == [3, 4]
