"""Attacks on the hand-over before a leave (pull everything, chase forks, share proofs).

A leaving node pulls from every peer and pushes the proofs it holds, and
``POST /evict`` pulls everything first too. Every pull is bounded, but a
loop of them is only as bounded as its end condition: here peers that never
let it end (a member that has one more event for every pull, a peer that
never answers) play against real nodes on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time

import trio
import trio.testing

from crdtbook.codec import CodecError
from crdtbook.feed import Block, genesis
from crdtbook.feedwire import decode_pull_message, encode_blocks
from crdtbook.proofs import fork
from node import service
from node.cluster import gossip

from .fakepeer import Fake
from .nodes import client, eventually, start
from .peers import SignedPeer
from .test_attacks import push

QUIET = 60.0  # pull interval: these nodes pull only when a leave, an evict or a test does
SHORT = 1.0  # the bound the tests give pull_everything, instead of its real one


class Dribbler(Fake):
    """A member's node that has exactly one event more for every pull (its member
    places an order as it answers), and says there is more still."""

    def __init__(self, member: SignedPeer, clock) -> None:
        super().__init__({"/peer/pull": self._pull})
        self.member = member
        self.clock = clock  # the victim's wall clock (ms): the events stay within it
        self.pulls = 0
        self.armed = False  # until then it answers as an idle member: nothing, no more

    def _pull(self, headers: dict, body: bytes) -> tuple[int, bytes, dict]:
        self.pulls += 1
        m = self.member
        if not self.armed:
            return 200, encode_blocks([]), {"x-crdtbook-replica": m.id}
        tip = decode_pull_message(body).tips.get(m.id) or genesis(m.id)
        m.place("sell", "1", "50", now_ms=self.clock() + 5)
        blocks = [e.block for e in m.door.index.blocks_after(m.id, tip.last)]
        return 200, encode_blocks(blocks), {"x-crdtbook-replica": m.id, "x-crdtbook-more": "1"}


async def dribbling(nursery, a) -> Dribbler:
    m = SignedPeer("one-more-each-time").admitted_by(a.node)
    fake = Dribbler(m, a.node.clock_ms)
    await fake.serve(nursery)
    a.node.add_peer(fake.url)  # however it got there (a registry entry, a pull header)
    await eventually(lambda: fake.pulls)  # its puller's first pull; the next is a minute away
    fake.armed = True
    return fake


async def test_a_member_with_one_more_event_per_pull_cannot_hold_a_leave_for_ever(
        nursery, monkeypatch):
    monkeypatch.setattr(gossip, "EVERYTHING_S", SHORT)
    a = await start(nursery, pull_interval_s=QUIET)
    fake = await dribbling(nursery, a)
    async with client() as http:
        with trio.move_on_after(SHORT * 10) as waited:
            r = await http.post(a.url + "/leave?timeout=0.5", headers=a.admin, timeout=60)
        assert not waited.cancelled_caught, "the leave never ended"
        assert r.status_code == 200, r.text
    assert fake.pulls > 1  # it did feed the leave's pulls
    assert a.node.door.tip(fake.member.id).last > 0


async def test_a_member_with_one_more_event_per_pull_cannot_hold_an_evict_for_ever(
        nursery, monkeypatch):
    monkeypatch.setattr(gossip, "EVERYTHING_S", SHORT)
    a = await start(nursery, pull_interval_s=QUIET)
    gone = SignedPeer("vanished").admitted_by(a.node)
    fake = await dribbling(nursery, a)
    async with client() as http:
        for force, status in ((False, 409), (True, 200)):
            with trio.move_on_after(SHORT * 10) as waited:
                r = await http.post(a.url + "/evict", json={"replica": gone.id, "force": force},
                                    headers=a.admin, timeout=60)
            assert not waited.cancelled_caught, "the evict never ended"
            assert r.status_code == status, r.text
            if not force:  # a peer that could not be pulled dry: evicting could lose events
                assert r.json()["error"] == "peers_unreachable"
                assert fake.url in r.json()["detail"]
    assert gone.id not in a.node.replica.members()
    assert a.node.replica.is_member(fake.member.id)


async def hanging_peer(nursery) -> str:
    """A peer that takes the connection and the request, and never answers."""
    async def handle(stream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_a_peer_that_never_answers_cannot_keep_a_stopping_node_from_sharing_proofs(
        nursery):
    """A graceful stop hands over within a bound: a peer whose pulls all time out used
    to take the whole bound, and the proof of a fork only the stopping node had found
    (pulling from the honest peer at once) was never pushed to anyone."""
    a = await start(nursery, pull_interval_s=QUIET, leave_on_stop=True)
    b = await start(nursery, a.url, pull_interval_s=QUIET)
    await eventually(lambda: len(a.node.replica.members()) == 2 == len(b.node.replica.members()))
    left, right = SignedPeer("two-faced-at-stop"), SignedPeer("two-faced-at-stop")
    left.admitted_by(a.node)
    await eventually(lambda: all(n.node.replica.is_member(left.id) for n in (a, b)))
    a.node.add_peer(await hanging_peer(nursery))
    assert a.node.config.request_timeout_s * 4 > gossip.HAND_OVER_S  # a pull outlasts it
    now = a.node.clock_ms()
    async with client() as http:
        assert (await push(http, a, left.blocks([left.place("sell", "1", "30", now)]))
                ).status_code == 204
        assert (await push(http, b, right.blocks([right.place("buy", "2", "31", now)]))
                ).status_code == 204
    assert not a.node.door.proofs and not b.node.door.proofs  # nobody saw both
    await a.stop()
    assert left.id in a.node.door.proofs  # the stopping node found the fork
    await eventually(lambda: left.id in b.node.door.proofs, timeout=5)
    assert left.id not in b.node.replica.members()


async def test_a_push_of_proofs_alone_convicts(nursery):
    """What a leaving node's hand-over sends: proofs, no blocks."""
    a = await start(nursery, pull_interval_s=QUIET)
    left, right = SignedPeer("two-faced-proven"), SignedPeer("two-faced-proven")
    left.admitted_by(a.node)
    now = a.node.clock_ms()
    one, other = left.place("sell", "1", "30", now), right.place("buy", "2", "31", now)
    proof = fork(genesis(left.id).hash, one, other)
    async with client() as http:
        r = await push(http, a, encode_blocks([], proofs=[proof]))
        assert r.status_code == 204, r.text
    assert a.node.door.proofs[left.id].cut == 0
    assert left.id not in a.node.replica.members()


def feed_block(peer: SignedPeer, side: str, price: str, now_ms: int, orders: int):
    """One signed block of ``orders`` orders: a version of ``peer``'s feed that is large."""
    peer.replica.place_many([(side, "1", price, "limit", "")] * orders, now_ms=now_ms)
    return peer.seal()


async def test_proofs_a_hand_over_shares_go_in_pushes_a_receiver_takes(nursery, monkeypatch):
    """Two members fork with large blocks: each proof fits in a push, both together do
    not. The leaving node pushed every proof in one body; the receiver refused it (413)
    and convicted neither. It now pushes them in parts, as it pushes blocks."""
    a = await start(nursery, pull_interval_s=QUIET)
    b = await start(nursery, a.url, pull_interval_s=QUIET)
    await eventually(lambda: len(a.node.replica.members()) == 2 == len(b.node.replica.members()))
    faces = []
    for name in ("large-two-faced-1", "large-two-faced-2"):
        faces.append((SignedPeer(name).admitted_by(a.node), SignedPeer(name)))
    await eventually(lambda: all(n.node.replica.is_member(left.id)
                                 for n in (a, b) for left, _ in faces))
    now = a.node.clock_ms()
    versions = [(feed_block(left, "sell", "30", now, 300), feed_block(right, "buy", "1", now, 300))
                for left, right in faces]
    one = len(encode_blocks([], a.node.claims(), proofs=[
        fork(genesis(faces[0][0].id).hash, *versions[0])]))
    monkeypatch.setattr(gossip, "PUSH_BODY_LIMIT", one + one // 2)  # one proof, not two
    monkeypatch.setattr(gossip, "PUSH_BYTES", one // 4)  # block bytes of a push: see _parts
    async with client() as http:
        for (left, right), (to_a, to_b) in zip(faces, versions, strict=True):
            assert (await push(http, a, left.blocks([to_a]))).status_code == 204
            assert (await push(http, b, right.blocks([to_b]))).status_code == 204
        assert not a.node.door.proofs and not b.node.door.proofs  # nobody saw both
        r = await http.post(a.url + "/leave?timeout=0.5", headers=a.admin, timeout=30)
        assert r.status_code == 200, r.text
    assert all(left.id in a.node.door.proofs for left, _ in faces)
    await eventually(lambda: all(left.id in b.node.door.proofs for left, _ in faces), timeout=5)


def pulls(fake: Fake) -> int:
    return [path for path, _, _ in fake.requests].count("/peer/pull")


async def test_a_pull_answer_slow_to_decode_cannot_hold_a_stop_past_its_bound(
        nursery, monkeypatch):
    """A pull answer of up to the peer body limit (64 MiB: about 8 s of decoding here,
    on a worker thread) came from a peer while the node was stopping: the hand-over's
    bound cancelled the pull, but the cancel waited for the thread, whatever the bound."""
    a = await start(nursery, pull_interval_s=QUIET, leave_on_stop=True)
    junk = Block("junk", 1, 1, bytes(service.LARGE_MESSAGE), bytes(64), ())
    large = encode_blocks([junk])  # decoded on the worker thread (not an event: refused there)
    fake = Fake({"/peer/pull": lambda h, body: (200, large if fake.armed else encode_blocks([]),
                                                 {})})
    fake.armed = False
    await fake.serve(nursery)
    release = threading.Event()
    decode = service.decode_blocks_message

    def slow(payload: bytes):
        if payload == large:
            release.wait(60)  # as long as a 64 MiB answer takes here, and more
        return decode(payload)

    monkeypatch.setattr(service, "decode_blocks_message", slow)
    try:
        a.node.add_peer(fake.url)
        await eventually(lambda: pulls(fake))  # its puller's first pull; the next is far
        fake.armed = True
        started = time.monotonic()
        await a.stop()  # fails past 10 s
        assert time.monotonic() - started < gossip.HAND_OVER_S + 5
        assert pulls(fake) >= 2  # the hand-over did pull it
    finally:
        release.set()


def test_a_decode_abandoned_by_an_ended_run_holds_no_later_runs_decodes(monkeypatch):
    """The test above ends its run while its decode thread still works (as may any
    test that stops a node mid-push). That thread never gave its token back to the
    one-at-a-time decode limiter, a module global then, and every later large decode
    in the process waited forever (test_node_api's large bad pushes timed out)."""
    release, entered = threading.Event(), threading.Event()
    large = encode_blocks([Block("junk", 1, 1, bytes(service.LARGE_MESSAGE), bytes(64), ())])
    decode = service.decode_blocks_message
    calls = []

    def held_the_first_time(payload: bytes):
        calls.append(payload)
        if len(calls) == 1:
            entered.set()
            release.wait(60)
        return decode(payload)

    async def abandon() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(service.decoded, large)
            # Its thread is in the decode (not merely started): on a loaded machine
            # the later run's decode could otherwise come first.
            await trio.to_thread.run_sync(entered.wait, 30)
            inner.cancel_scope.cancel()

    async def decode_again() -> str:
        with trio.fail_after(30):  # a liveness bound: it waited forever
            try:
                await service.decoded(large)
            except CodecError as exc:
                return str(exc)
        return "decoded"

    monkeypatch.setattr(service, "decode_blocks_message", held_the_first_time)
    try:
        trio.run(abandon)  # the run is over, its thread still decoding
    finally:
        release.set()  # it ends now, with no run left to hand its token back to
    assert "trailing bytes" in trio.run(decode_again)  # refused as usual, not stuck
    assert len(calls) == 2


async def test_blocks_of_another_version_in_one_message_convict_skip_and_hide_nothing(nursery):
    """The door skips a message's block that differs from the one held at its place,
    and the rest of that origin's blocks in it. Against a real node: a duplicate is
    still a no-op; a forged version hides nothing for good and convicts nobody; a
    validly signed other version convicts; another origin's blocks in the same
    message are taken whatever happens to the first one's."""
    a = await start(nursery, pull_interval_s=QUIET)
    m, twin = SignedPeer("forked-in-one-message"), SignedPeer("forked-in-one-message")
    m.admitted_by(a.node)
    other = SignedPeer("bystander").admitted_by(a.node)
    now = a.node.clock_ms() + 5
    one = m.place("sell", "1", "30", now)
    two = m.place("sell", "1", "31", now + 1)
    async with client() as http:
        assert (await push(http, a, m.blocks([one]))).status_code == 204
        # a duplicate of the held block, then the next: both as one message, taken
        assert (await push(http, a, m.blocks([one, two]))).status_code == 204
        assert a.node.door.tip(m.id).last == 2
        assert not a.node.door.refused

        # a forged version of a held block, then honest blocks: nothing of it changes
        # anything (no conviction, nothing taken past it); another origin's block is taken
        three = m.place("sell", "1", "32", now + 2)
        forged = one._replace(sig=bytes(64))
        first_of_other = other.place("buy", "1", "1", now + 2)
        r = await push(http, a, encode_blocks([forged, three, first_of_other]))
        assert r.status_code == 204
        assert a.node.door.tip(m.id).last == 2 and not a.node.door.proofs
        assert a.node.door.tip(other.id).last == 1
        assert a.node.door.refused["another version of a block held here"] == 1
        assert (await push(http, a, m.blocks([three]))).status_code == 204  # hidden: no
        assert a.node.door.tip(m.id).last == 3

        # a validly signed other version (a fork), then its next block: convicted at it
        forked = twin.place("buy", "2", "29", now)
        after = twin.place("buy", "2", "28", now + 1)
        second_of_other = other.place("buy", "1", "2", now + 3)
        r = await push(http, a, encode_blocks([forked, after, second_of_other]))
        assert r.status_code == 204
        assert a.node.door.proofs[m.id].cut == 0
        assert m.id not in a.node.replica.members()
        assert a.node.door.tip(other.id).last == 2
