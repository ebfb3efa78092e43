from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from imcore.config import build
from imcore.server import RunningServer, serve
from tests.helpers.client import Client, open_client
from tests.helpers.core import SECRET
from tests.helpers.files import GatedFiles

if TYPE_CHECKING:
    from pathlib import Path

DM = "dm:alice:bob"


async def test_dm_reaches_every_device_of_both_users(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with (
            open_client(server, "alice", device="phone") as phone,
            open_client(server, "alice", device="laptop") as laptop,
            open_client(server, "bob", device="phone") as bob,
        ):
            ack = await phone.request(op="send", conv=DM, cmid="m1", body="hi")
            assert (ack["op"], ack["seq"], ack["dup"]) == ("ack", 1, False)
            for client in (phone, laptop, bob):
                msg = await client.next_push("msg")
                assert (msg["seq"], msg["from"], msg["dev"], msg["body"]) == (
                    1,
                    "alice",
                    "phone",
                    "hi",
                )
                assert msg["ts"] == ack["ts"]
            reply = await bob.request(op="send", conv=DM, cmid="r1", body={"text": "hey"})
            assert reply["seq"] == 2
            for client in (phone, laptop, bob):
                msg = await client.next_push("msg")
                assert (msg["seq"], msg["from"], msg["body"]) == (2, "bob", {"text": "hey"})


async def test_dup_cmid_across_reconnects_returns_the_original(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice:
            first = await alice.request(op="send", conv=DM, cmid="once", body=1)
        async with open_client(server, "alice") as alice, open_client(server, "bob") as bob:
            again = await alice.request(op="send", conv=DM, cmid="once", body="changed")
            assert again["dup"] is True
            assert (again["seq"], again["ts"]) == (first["seq"], first["ts"])
            batch = await bob.request(op="sync", conv=DM, after=0)
            assert [(m["seq"], m["body"]) for m in batch["msgs"]] == [(1, 1)]
            # the dup pushed nothing: the next push is the next event
            await alice.request(op="send", conv=DM, cmid="twice", body=2)
            assert (await alice.next_push("msg"))["seq"] == 2


async def test_resume_after_reconnect_with_welcome_convs_and_sync(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "bob") as bob:
            async with open_client(server, "alice") as alice:
                await alice.request(op="send", conv=DM, cmid="a", body=1)
            last_seen = (await bob.next_push("msg"))["seq"]
        async with open_client(server, "alice") as alice:
            for i in range(5):
                await alice.request(op="send", conv=DM, cmid=f"b{i}", body=i)
        async with open_client(server, "bob") as bob:
            (conv,) = bob.welcome["convs"]
            assert (conv["conv"], conv["head"], conv["floor"]) == (DM, 6, 1)
            assert conv["unread"] == 6
            batch = await bob.request(op="sync", conv=DM, after=last_seen)
            assert [m["seq"] for m in batch["msgs"]] == [2, 3, 4, 5, 6]
            assert (batch["head"], batch["more"]) == (6, False)


async def test_read_and_delivered_receipts(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with (
            open_client(server, "alice") as alice,
            open_client(server, "bob", device="phone") as phone,
            open_client(server, "bob", device="tablet") as tablet,
        ):
            for i in range(3):
                await alice.request(op="send", conv=DM, cmid=f"m{i}", body=i)
            await phone.next_msgs(3)
            await phone.send_frame(op="recv", conv=DM, seq=3)
            delivered = await alice.next_push("delivered")
            assert delivered == {"op": "delivered", "conv": DM, "user": "bob", "seq": 3}

            assert await phone.request(op="read", conv=DM, seq=2) == {"op": "ok", "id": 2}
            for client in (alice, tablet):
                receipt = await client.next_push("read")
                assert receipt == {"op": "read", "conv": DM, "user": "bob", "seq": 2}
            convs = await phone.request(op="convs")
            (summary,) = convs["convs"]
            assert (summary["read"], summary["unread"], summary["head"]) == (2, 1, 3)
            # a lower read is ignored: no receipt
            await phone.request(op="read", conv=DM, seq=1)
            await tablet.request(op="read", conv=DM, seq=3)
            receipt = await alice.next_push("read")
            assert receipt["seq"] == 3
            # the phone hears of the tablet's read, never of its own
            assert (await phone.next_push("read"))["seq"] == 3


async def test_notes_to_self(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice:
            ack = await alice.request(op="send", conv="dm:alice:alice", cmid="n", body="note")
            assert ack["seq"] == 1
            assert (await alice.next_push("msg"))["body"] == "note"


async def test_typing_in_a_dm_with_no_message_yet_reaches_the_peers_devices(
    server: RunningServer,
) -> None:
    notice = {"op": "typing", "conv": DM, "user": "alice"}
    with trio.fail_after(10):
        async with (
            open_client(server, "alice", device="phone") as phone,
            open_client(server, "alice", device="laptop") as laptop,
            open_client(server, "bob", device="phone") as bob_phone,
            open_client(server, "bob", device="laptop") as bob_laptop,
        ):
            await phone.send_frame(op="typing", conv=DM)
            # The first message follows the notice in the DM's own order, so a device the
            # notice missed would see the message first.
            await phone.request(op="send", conv=DM, cmid="m1", body="hi")
            for peer in (bob_phone, bob_laptop):
                assert await peer.next_push() == notice
                assert (await peer.next_push())["op"] == "msg"
            for own in (phone, laptop):  # the typist's own devices are not told
                assert (await own.next_push())["op"] == "msg"


async def test_ping_pong_and_typing(server: RunningServer) -> None:
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice, open_client(server, "bob") as bob:
            await alice.request(op="send", conv=DM, cmid="m", body=1)
            pong = await alice.request(op="ping")
            assert (pong["op"], pong["ts"]) == ("pong", 1)
            await alice.send_frame(op="typing", conv=DM)
            assert await bob.next_push("typing") == {"op": "typing", "conv": DM, "user": "alice"}


async def test_a_reconnecting_sender_sees_where_the_peer_received_and_read(
    server: RunningServer,
) -> None:
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice:
            for i in range(4):
                await alice.request(op="send", conv=DM, cmid=f"m{i}", body=i)
            await alice.request(op="group.create", conv="g:team", members=["bob"])
        async with open_client(server, "bob") as bob:
            (dm,) = [c for c in bob.welcome["convs"] if c["conv"] == DM]
            assert (dm["peer_read"], dm["peer_delivered"]) == (0, 0)
            # an ok is released only once the position it covers is committed
            assert await bob.request(op="recv", conv=DM, seq=4) == {"op": "ok", "id": 2}
            assert await bob.request(op="read", conv=DM, seq=3) == {"op": "ok", "id": 3}
            assert await bob.request(op="recv", conv=DM, seq=2) == {"op": "ok", "id": 4}
        # alice was offline for both pushes; she learns the positions when she comes back
        async with open_client(server, "alice", device="laptop") as alice:
            summaries = {c["conv"]: c for c in alice.welcome["convs"]}
            assert (summaries[DM]["peer_read"], summaries[DM]["peer_delivered"]) == (3, 4)
            assert "peer_read" not in summaries["g:team"]
            assert "peer_delivered" not in summaries["g:team"]
            listed = {c["conv"]: c for c in (await alice.request(op="convs"))["convs"]}
            assert listed == summaries
            assert alice.pending_pushes() == []  # nothing missed is pushed on connecting


async def test_the_ok_of_a_recv_waits_for_the_delivered_position_it_covers(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    files = GatedFiles()
    config = build({"port": 0, "admin_port": 0, "data_dir": tmp_path, "auth_secret": SECRET})
    server: RunningServer = await nursery.start(partial(serve, config, files=files))
    with trio.fail_after(10):
        async with open_client(server, "alice") as alice, open_client(server, "bob") as bob:
            for i in range(2):
                await alice.request(op="send", conv=DM, cmid=f"m{i}", body=i)
            files.gate.clear()  # from here on, commits wait
            try:
                await bob.send_frame(op="recv", id="moves", conv=DM, seq=2)
                await bob.send_frame(op="recv", id="behind", conv=DM, seq=1)
                await bob.send_frame(op="ping", id="ping")
                # One connection's frames go out in order: what precedes the pong was
                # released before it. Neither ok may be, while the record is uncommitted.
                assert await replies_until(bob, "ping") == ["ping"]
            finally:
                files.gate.set()
            assert await replies_until(bob, "behind") == ["moves", "behind"]
            delivered = await alice.next_push("delivered")
            assert delivered == {"op": "delivered", "conv": DM, "user": "bob", "seq": 2}


async def replies_until(client: Client, last: str) -> list[Any]:
    """The ids of the replies `client` reads up to the one with id `last`, in order."""
    ids: list[Any] = []
    while not ids or ids[-1] != last:
        frame = client.decode(await client.ws.get_message())
        if "id" in frame:
            ids.append(frame["id"])
    return ids
