"""Pushes go out once their blocks are durable, up to four in flight per peer
(node/cluster/gossip.py ``_sender``, ``PUSHES_IN_FLIGHT``), and a receiver
takes one that overtook the push before it once that one is in
(node/cluster/peerapi.py ``_after_overtaken``).

The sending peer's test has a fake receiver that holds every push's answer
until the test lets it go, so it sees what the node sends while its pushes are
unanswered; the receiving side's tests hand pushes to ``PeerAPI`` directly.
"""

from __future__ import annotations

import trio
import trio.testing

from crdtbook.feedwire import decode_blocks_message, encode_blocks
from node.api.requests import OrderRequest
from node.asgi import Request
from node.cluster import gossip
from node.cluster.peerapi import PeerAPI
from node.service import Node, NodeConfig

from .nodes import client, eventually, start


class HoldingPeer:
    """Answers pulls at once (nothing to give), pushes only when ``release`` is called."""

    def __init__(self) -> None:
        self.pushes: list[list] = []  # each push's blocks, in the order they were read
        self.answered = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._released = trio.Semaphore(0)
        self.url = ""

    async def serve(self, nursery: trio.Nursery) -> str:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, self._connection, listeners)
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        return self.url

    def release(self) -> None:
        self._released.release()

    async def _connection(self, stream) -> None:
        data = b""
        try:
            while True:  # keep-alive: one request after another
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(data) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
                body, data = data[:length], data[length:]
                status, payload = 404, b""
                if path == "/peer/push":
                    self.pushes.append(decode_blocks_message(body).blocks)
                    self.in_flight += 1
                    self.most_in_flight = max(self.most_in_flight, self.in_flight)
                    await self._released.acquire()
                    self.in_flight -= 1
                    self.answered += 1
                    status = 204
                elif path == "/peer/pull":
                    status, payload = 200, encode_blocks([], [])
                await stream.send_all(f"HTTP/1.1 {status} X\r\ncontent-length: {len(payload)}"
                                      "\r\n\r\n".encode() + payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def own_seqs(pushes: list[list], origin: str) -> list[tuple[int, int]]:
    return [(b.first, b.last) for blocks in pushes for b in blocks if b.replica == origin]


async def test_pushes_in_flight_up_to_the_bound_then_the_rest_in_one(nursery, tmp_path):
    peer = HoldingPeer()
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    a.node.add_peer(await peer.serve(nursery))
    outbox = a.node.peers[peer.url].outbox
    slots = gossip.PUSHES_IN_FLIGHT
    assert slots >= 2
    async with client() as http:

        async def order(price: int) -> None:
            answer = await http.post(f"{a.url}/orders",
                                     json={"side": "buy", "qty": "1", "price": str(price)})
            assert answer.status_code == 201, answer.text  # durable: its block is sealed

        for n in range(slots):  # none answered: each goes out beside the ones before
            await order(10 + n)
            await eventually(lambda n=n: len(peer.pushes) == n + 1)
        await order(10 + slots)
        await order(11 + slots)
        # every slot taken: the two blocks wait in the outbox, not on the wire
        await eventually(lambda: outbox.statistics().current_buffer_used == 2)
        assert len(peer.pushes) == slots and peer.answered == 0
        peer.release()
        await eventually(lambda: len(peer.pushes) == slots + 1)  # everything queued, in one
        assert len(peer.pushes[slots]) == 2
        for _ in range(slots):
            peer.release()
        await eventually(lambda: peer.answered == slots + 1)
    assert peer.most_in_flight == slots
    seqs = sorted(own_seqs(peer.pushes, a.node.id))
    assert all(nxt[0] == prev[1] + 1 for prev, nxt in zip(seqs, seqs[1:], strict=False))
    assert sum(last - first + 1 for first, last in seqs) >= slots + 2  # each order sent once


# -- the receiver: a push that overtook the one before it -------------------------


class Clock:
    def __init__(self) -> None:
        self.ms = 1_764_000_000_000

    def now(self) -> int:
        self.ms += 1
        return self.ms


async def two_blocks(tmp_path, nursery):
    """a (founder) and b (admitted), durable, writers running; a's next two blocks
    (one order each, two commits), which b lacks."""
    clock = Clock()
    a, b = (Node(NodeConfig(port=0, data_dir=str(tmp_path / name), fsync=False,
                            rpc_host=None), clock_ms=clock.now) for name in "ab")
    for n in (a, b):
        nursery.start_soon(n.journal.run)
    a.bootstrap()
    a.sponsor(b.id, b.signer.public)
    await a.journal.sync()
    b.accept(decode_blocks_message(encode_blocks(a.door.answer({}).blocks, [])).blocks,
             may_found=True)
    await b.journal.sync()
    tip = a.door.tip(a.id).last
    for price in ("10", "11"):
        a.place_many([OrderRequest("buy", "1", price, "limit", "")])
        await a.journal.sync()
    blocks = [blk for blk in a.door.answer({}).blocks if blk.replica == a.id and blk.last > tip]
    assert len(blocks) == 2
    return a, b, blocks


def push_request(sender: Node, blocks) -> Request:
    scope = {"method": "POST", "path": "/peer/push",
             "headers": [(b"x-crdtbook-replica", sender.id.encode())]}
    return Request(scope, encode_blocks(blocks, []))


async def test_a_push_that_overtook_the_one_before_waits_for_it(tmp_path, nursery):
    a, b, (first, second) = await two_blocks(tmp_path, nursery)
    api = PeerAPI(b)
    held = b.replica.events_total()
    answers: list[int] = []

    async def push(block) -> None:
        answers.append((await api.peer_push(push_request(a, [block]))).status)

    async with trio.open_nursery() as pushes:
        pushes.start_soon(push, second)  # overtook the first on the way
        await trio.testing.wait_all_tasks_blocked()
        assert b.replica.events_total() == held  # waiting, not skipped
        pushes.start_soon(push, first)
    assert answers == [204, 204]
    assert b.replica.events_total() == held + 2  # both in, none left for a pull
    assert b.door.refused["gap"] == 0
    for n in (a, b):
        n.close()


async def test_a_push_past_a_real_gap_is_skipped_after_the_wait(tmp_path, nursery):
    a, b, (_, second) = await two_blocks(tmp_path, nursery)
    held = b.replica.events_total()
    answer = await PeerAPI(b).peer_push(push_request(a, [second]))
    assert answer.status == 204  # taken as before: its block skipped, a pull repairs
    assert b.replica.events_total() == held
    assert b.door.refused["gap"] == 1
    for n in (a, b):
        n.close()
