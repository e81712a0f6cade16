"""Attacks on the trust layer (signed feeds, the door), against real nodes.

Every test here runs real nodes on 127.0.0.1 (port 0), plays an attacker
against them over HTTP (a forger without keys, a member that misbehaves, a
fake peer that the victim pulls from), and then checks that the attack
changed nothing it must not change:

* the attack is refused with a 4xx, or ignored (skipped, counted);
* the cluster still converges (equal digests everywhere);
* no fill already reported final changes;
* every node still takes orders (201) and none ends in ``conflict``.

Every attack that once got through is fixed; its test stays here.
"""

from __future__ import annotations

import os
import tempfile

import trio

from crdtbook.codec import encode_snapshot
from crdtbook.context import CausalContext
from crdtbook.door import Door
from crdtbook.events import make_member, make_order
from crdtbook.feed import Block, SignedClaim, claim_message, genesis, head_message, link
from crdtbook.feedwire import encode_blocks, encode_body, encode_pull
from crdtbook.keys import Signer
from crdtbook.replica import Replica
from node.cluster import gossip

from .fakepeer import Fake
from .nodes import Running, client, converged, eventually, start
from .peers import SignedPeer
from .procs import NodeProcess, get


# -- the cluster and what must hold after every attack -----------------------------
async def order(http, url: str, side: str, qty: str = "1", price: str = "10") -> dict:
    response = await http.post(f"{url}/orders", json={"side": side, "qty": qty, "price": price})
    assert response.status_code == 201, response.text
    return response.json()


async def final_fills(http, url: str) -> dict[str, dict]:
    fills = (await http.get(f"{url}/fills?limit=10000")).json()["fills"]
    return {f["id"]: f for f in fills if f["final"]}


class Cluster:
    """Three real nodes that traded, with the fills each reported final."""

    def __init__(self, nodes: list[Running]) -> None:
        self.nodes = nodes
        self.finals: dict[str, dict] = {}

    @property
    def a(self) -> Running:
        return self.nodes[0]

    @property
    def b(self) -> Running:
        return self.nodes[1]

    @property
    def c(self) -> Running:
        return self.nodes[2]

    async def record_finals(self, http) -> None:
        for node in self.nodes:
            self.finals[node.url] = await final_fills(http, node.url)

    def digests(self) -> list[str]:
        return [n.node.replica.digest() for n in self.nodes]

    async def intact(self, http, *extra: Running, timeout: float = 15.0) -> None:
        """The attack left the cluster whole: it converges, nothing final changed,
        every node trades, none is in conflict."""
        nodes = [*self.nodes, *extra]
        await eventually(lambda: converged(*nodes), timeout=timeout)
        for node in self.nodes:
            now = await final_fills(http, node.url)
            before = self.finals.get(node.url, {})
            assert {k: now.get(k) for k in before} == before, "a final fill changed"
        for node in nodes:
            await order(http, node.url, "buy", "1", "1")
            status = (await http.get(f"{node.url}/status")).json()
            assert status["conflict"] is None
        await eventually(lambda: converged(*nodes), timeout=timeout)


async def cluster(nursery, http) -> Cluster:
    a = await start(nursery)
    b = await start(nursery, a.url)
    c = await start(nursery, a.url)
    await eventually(lambda: all(len(r.node.peers) == 2 for r in (a, b, c)))
    for node in (a, b, c):
        await order(http, node.url, "sell", "1", "10")
    for node in (a, b, c):
        await order(http, node.url, "buy", "1", "10")
    group = Cluster([a, b, c])
    await eventually(lambda: converged(a, b, c, events=6))

    async def all_final() -> bool:
        return all([len(await final_fills(http, n.url)) == 3 for n in (a, b, c)])

    await eventually(all_final)
    await group.record_finals(http)
    return group


async def push(http, node: Running, body: bytes, **headers):
    return await http.post(f"{node.url}/peer/push", content=body, headers=headers)


def member(group: Cluster, name: str) -> SignedPeer:
    """A signed peer admitted by ``group.a`` (a member with a key the test holds)."""
    return SignedPeer(name).admitted_by(group.a.node)


def unsigned(block: Block, sig: bytes = bytes(64)) -> Block:
    return block._replace(sig=sig)


def stranger_block(signer: Signer, seq: int = 1, clock: int = 1 << 16, **order) -> Block:
    """A block of a replica nobody admitted, validly signed by its own key."""
    event = make_order(clock, signer.id, seq, order.get("side", "buy"), "limit",
                       10**8, 10**8, "")
    body = encode_body([event])
    tip = genesis(signer.id)
    sig = signer.sign(head_message(signer.id, seq, link(tip.hash, body)))
    return Block(signer.id, seq, seq, body, sig, (event,))


# -- 1. events under another member's id --------------------------------------------
async def test_push_under_another_members_id_is_refused(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b = group.a, group.b
        forger = SignedPeer("forger")
        tip = a.node.door.tips[b.node.id]
        now = a.node.clock_ms()
        signed_by_forger = forger.forge(b.node.id, tip, now)
        garbage = unsigned(signed_by_forger, os.urandom(64))
        zeros = unsigned(signed_by_forger)
        # a real signature of b (its latest block's head), on a different body
        blocks, _ = _decode(await _pull_from(http, a, CausalContext()))
        real = [blk for blk in blocks if blk.replica == b.node.id][-1]
        borrowed = unsigned(signed_by_forger, real.sig)
        before = group.digests()
        for block in (signed_by_forger, garbage, zeros, borrowed):
            r = await push(http, a, forger.blocks([block]))
            assert r.status_code == 400 and "signature" in r.json()["detail"], r.text
        assert group.digests() == before
        assert a.node.status()["refused"]["messages"] >= 4
        # a tampered copy of a block held already is a duplicate: ignored, nothing changes
        changed = (real.events[0]._replace(qty=real.events[0].qty + 1), *real.events[1:])
        tampered = real._replace(body=encode_body(changed), events=changed)
        r = await push(http, a, encode_blocks([tampered]))
        assert r.status_code == 204 and group.digests() == before
        await group.intact(http)


# -- 2. one dot, two contents, two nodes ----------------------------------------------
async def test_one_dot_two_contents_without_the_key_is_refused(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b, c = group.nodes
        tip = a.node.door.tips[b.node.id]
        now = a.node.clock_ms()
        one = SignedPeer("forger-one").forge(b.node.id, tip, now)
        two = SignedPeer("forger-two").forge(b.node.id, tip, now + 1)
        assert one.body != two.body and (one.replica, one.first) == (two.replica, two.first)
        ra = await push(http, a, encode_blocks([one]))
        rc = await push(http, c, encode_blocks([two]))
        assert ra.status_code == rc.status_code == 400
        await group.intact(http)


async def test_member_equivocation_is_detected(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b, c = group.nodes
        # two copies of the same member key: each signs a different seq 1
        left, right = SignedPeer("two-faced"), SignedPeer("two-faced")
        left.admitted_by(a.node)
        await eventually(lambda: all(n.node.replica.is_member(left.id) for n in group.nodes))
        now = a.node.clock_ms()
        to_a = left.place("sell", "1", "30", now_ms=now)
        to_c = right.place("buy", "2", "31", now_ms=now)
        assert (to_a.first, to_a.last) == (to_c.first, to_c.last) and to_a.body != to_c.body
        assert (await push(http, a, left.blocks([to_a]))).status_code == 204
        assert (await push(http, c, right.blocks([to_c]))).status_code == 204
        # a and c each hold their version; b may get the proof before either version
        # (then it never takes one), so only the two that were pushed to are asked
        assert a.node.door.tip(left.id).last == 1 and c.node.door.tip(left.id).last == 1
        # both versions meet somewhere: the proof spreads, every node convicts the member
        # at the same cut, and the versions leave every digest
        await eventually(lambda: all(left.id in n.node.door.proofs for n in group.nodes))
        assert {n.node.door.proofs[left.id].cut for n in group.nodes} == {0}
        await eventually(lambda: converged(a, b, c), timeout=5)
        assert all(left.id not in n.node.replica.members() for n in group.nodes)
        await group.intact(http)


async def test_member_event_below_some_final_frontiers_does_not_split(nursery):
    """A member's signed event at its own join clock (below some nodes' F, not others'):
    every node refuses it alike (a feed rule, not a frontier), so nobody holds it, the
    digests stay equal, and the member's chain also refuses a clock that goes back."""
    async with client() as http:
        a = await start(nursery)
        b = await start(nursery, a.url)
        c = await start(nursery, a.url, pull_interval_s=30.0)  # pulls when the test says
        await eventually(lambda: all(len(r.node.peers) == 2 for r in (a, b, c)))
        m = SignedPeer("promise-breaker").admitted_by(a.node)
        join = max(e.clock for e in a.node.replica.events()
                   if e.kind == "member" and e.target == m.id)
        event = make_order(join, m.id, 1, "sell", "limit", 10**8, 10**8, "")
        block = m.door.seal([event])
        assert (await push(http, a, m.blocks([block]))).status_code == 204
        assert a.node.door.tip(m.id).last == 0  # refused here although a's F is below it
        assert a.node.status()["refused"]["stamped_at_or_before_its_replica's_join"] == 1
        await eventually(lambda: c.node.replica.frontier() >= join)
        await gossip.pull_one(c.node, c.node.client, c.node.peers[a.url])
        assert c.node.door.tip(m.id).last == 0
        # a later block chaining on it can never be placed either: the feed is stuck there
        await eventually(lambda: converged(a, b, c))
        assert all(m.id not in {e.replica for e in n.node.replica.events()} for n in (a, b, c))
        r = await http.post(f"{c.url}/orders", json={"side": "buy", "qty": "1", "price": "1"})
        assert r.status_code == 201


# -- 3. a fake peer the victim pulls from ----------------------------------------------
class FakePeer(Fake):
    """A fake peer that answers every pull with ``answer`` (and lies in its headers)."""

    def __init__(self, replica: str = "") -> None:
        super().__init__({"/peer/pull": self._pull})
        self.replica = replica
        self.pulls = 0
        self.answer: bytes = encode_blocks([])
        self.more = False

    def _pull(self, headers: dict, body: bytes) -> tuple[int, bytes, dict]:
        self.pulls += 1
        extra = {"x-crdtbook-replica": self.replica} if self.replica else {}
        if self.more:
            extra["x-crdtbook-more"] = "1"
        return 200, self.answer, extra


def _decode(payload: bytes):
    from crdtbook.feedwire import decode_blocks
    return decode_blocks(payload)


def observing(context: CausalContext) -> CausalContext:
    """A context that names something held: an unsigned pull holding nothing is refused
    (it would ask for the whole history), so an observer names a made-up replica."""
    if not context.replicas():
        context.add("observer", 1)
    return context


async def _pull_from(http, node: Running, context: CausalContext) -> bytes:
    r = await http.post(f"{node.url}/peer/pull", content=encode_pull(observing(context)))
    assert r.status_code == 200
    return r.content


async def test_forged_pull_answers_change_nothing(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b, c = group.nodes

        async def lure(fake: FakePeer) -> None:
            """The victim learns of a fake peer from one unauthenticated pull header."""
            r = await http.post(f"{c.url}/peer/pull",
                                content=encode_pull(observing(CausalContext())),
                                headers={"x-crdtbook-url": fake.url})
            assert r.status_code == 200
            await eventually(lambda: fake.url in c.node.peers)

        # a member's new block that nobody holds yet: tampered, or with a bad signature
        m = member(group, "pulled-member")
        await eventually(lambda: c.node.replica.is_member(m.id))
        fresh = m.place("sell", "1", "40", now_ms=c.node.clock_ms() + 5)
        evil_event = fresh.events[0]._replace(qty=10**12)
        tampered = fresh._replace(body=encode_body([evil_event]), events=(evil_event,))
        bad_sig = unsigned(fresh, bytes(reversed(fresh.sig)))
        snapshot = encode_snapshot(c.node.replica.snapshot_state(), [])
        answers = [
            encode_blocks([tampered]),
            encode_blocks([bad_sig]),
            snapshot,
            b"\xa1" + b"\x00" * 100,  # not a message
            encode_blocks([], [SignedClaim(b.node.id, 1, c.node.replica.clock.last + (50_000 << 16),
                                           bytes(64))]),  # b's claim, unsigned, far ahead
        ]
        for answer in answers:  # a fresh fake for each (a failing peer is backed off)
            before, refused = c.node.replica.digest(), c.node.status()["refused"]
            fake = FakePeer(replica=b.node.id)  # it even says it is b
            fake.answer = answer
            await fake.serve(nursery)
            await lure(fake)
            await eventually(lambda f=fake: f.pulls >= 2 or c.node.peers[f.url].failures)
            assert c.node.replica.digest() == before
            assert c.node.door.tip(m.id).last == 0
            assert c.node.status()["refused"] != refused or c.node.peers[fake.url].last_error
        held = c.node.door.claims.get(b.node.id)
        assert held is None or held.clock < c.node.replica.clock.last + (40_000 << 16)
        # an inflated answer (past the peer body limit) is cut off and refused
        fake = FakePeer(replica=b.node.id)
        fake.answer = b"\x00" * (c.node.config.peer_body_limit + 1)
        await fake.serve(nursery)
        await lure(fake)
        await eventually(lambda: "larger" in (c.node.peers[fake.url].last_error or ""))
        assert c.node.replica.digest() == before
        fake.answer = encode_blocks([])
        # the real block, from a member: the victim takes it as it keeps converging
        assert (await push(http, a, m.blocks([fresh]))).status_code == 204
        await group.intact(http)


async def test_fake_peer_cannot_end_the_catch_up_wait(nursery):
    with tempfile.TemporaryDirectory() as data:
        async with client() as http:
            a = await start(nursery)
            b = await start(nursery, a.url, data_dir=data, fsync=False)
            await order(http, b.url, "sell")
            await eventually(lambda: converged(a, b))
            await b.stop()
            await a.stop()  # the only honest peer is gone: b must wait
            fake = FakePeer(replica=a.node.id)
            await fake.serve(nursery)
            node = await _start_unready(nursery, fake.url, data_dir=data, fsync=False)
            await eventually(lambda: fake.pulls >= 2)
            r = await http.post(f"{node.url}/orders", json={"side": "buy", "qty": "1",
                                                             "price": "1"})
            assert r.status_code == 503 and r.json()["error"] == "catching_up", r.text


async def test_spoofed_pull_cannot_fake_replication(nursery):
    async with client() as http:
        a = await start(nursery)
        silent = SignedPeer("silent").admitted_by(a.node)  # a member that holds nothing
        context = CausalContext()
        for seq in range(1, 100):
            context.add(a.node.id, seq)

        async def spoof() -> None:
            while True:
                await http.post(f"{a.url}/peer/pull", content=encode_pull(context),
                                headers={"x-crdtbook-replica": silent.id})
                await trio.sleep(SPOOF_EVERY_S)

        async with trio.open_nursery() as inner:
            inner.start_soon(spoof)
            r = await http.post(f"{a.url}/orders?ack=replicated&timeout=1",
                                json={"side": "buy", "qty": "1", "price": "1"})
            inner.cancel_scope.cancel()
        assert r.status_code == 202 and r.json()["replicated"] is False, r.text


async def test_acks_are_kept_only_for_members(nursery):
    """A pull's sender header is not authenticated: made-up senders must not grow memory."""
    async with client() as http:
        a = await start(nursery)
        body = encode_pull(observing(CausalContext()))
        for i in range(50):
            r = await http.post(f"{a.url}/peer/pull", content=body,
                                headers={"x-crdtbook-replica": f"made-up-{i}"})
            assert r.status_code in (200, 429)  # unsigned pulls: 5 a second per address
        assert not any(k.startswith("made-up") for k in a.node.replica._acks)
        assert not any(k.startswith("made-up") for k in a.node.peer_holds)


# -- 4. eviction -------------------------------------------------------------------
async def test_evict_needs_the_token_and_a_strangers_evict_is_skipped(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b, c = group.nodes
        for headers in ({}, {"Authorization": "Bearer nope"}, c.admin):  # c's token, at a
            r = await http.post(f"{a.url}/evict", json={"replica": b.node.id}, headers=headers)
            assert r.status_code == 401
        stranger = Signer.from_name("evicter")
        event = make_member(a.node.replica.clock.last + 1, stranger.id, 1, "evict", b.node.id,
                            0, b"")
        body = encode_body([event])
        sig = stranger.sign(head_message(stranger.id, 1, link(genesis(stranger.id).hash, body)))
        r = await push(http, a, encode_blocks([Block(stranger.id, 1, 1, body, sig, (event,))]))
        assert r.status_code == 204
        assert a.node.status()["refused"]["not_a_member"] >= 1
        assert all(b.node.id in n.node.replica.members() for n in group.nodes)
        await group.intact(http)


# -- 5. forged claims ------------------------------------------------------------------
async def test_forged_claims_are_ignored(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b, c = group.nodes
        ahead = (a.node.clock_ms() + 55_000) << 16
        wrong = Signer.from_name("claim-forger")
        seq = a.node.door.tips[b.node.id].last
        claims = [
            SignedClaim(b.node.id, seq, ahead, bytes(64)),
            SignedClaim(c.node.id, seq, ahead, wrong.sign(claim_message(c.node.id, seq, ahead))),
            SignedClaim(wrong.id, 0, ahead, wrong.sign(claim_message(wrong.id, 0, ahead))),
        ]
        fresh = [stranger_block(Signer.from_name(f"clock-one-{i}")) for i in range(3)]
        before = a.node.status()["refused"].get("claim_without_its_replica's_signature", 0)
        r = await push(http, a, encode_blocks(fresh, claims))
        assert r.status_code == 204
        refused = a.node.status()["refused"]
        assert refused["claim_without_its_replica's_signature"] == before + 2
        assert refused["not_a_member"] >= 3
        for replica in (b.node.id, c.node.id, wrong.id):
            held = a.node.door.claims.get(replica)
            assert held is None or held.clock < ahead
        assert a.node.replica.frontier() < ahead
        assert wrong.id not in a.node.replica.members()
        await group.intact(http)


async def test_member_claim_beyond_its_feed_does_not_finalize_it(nursery):
    """A member's signed claim naming a seq it never sent counts for nothing."""
    async with client() as http:
        group = await cluster(nursery, http)
        a = group.a
        m = member(group, "over-claimer")
        await eventually(lambda: all(n.node.replica.is_member(m.id) for n in group.nodes))
        ahead = (a.node.clock_ms() + 30_000) << 16
        claim = SignedClaim(m.id, 50, ahead, m.signer.sign(claim_message(m.id, 50, ahead)))
        r = await push(http, a, encode_blocks([], [claim]))
        assert r.status_code == 204
        assert a.node.door.claims[m.id] == claim  # held, but not counted: seq 50 is not held
        assert a.node.replica.frontier() < ahead
        # its events below that claim still get in (the promise counts only once seq 50 is)
        blk = m.place("sell", "1", "99", now_ms=a.node.clock_ms() + 5)
        assert (await push(http, a, m.blocks([blk]))).status_code == 204
        assert a.node.door.tip(m.id).last == 1
        await group.intact(http)


# -- 6. many strangers ------------------------------------------------------------------
async def test_twelve_thousand_strangers_are_turned_away(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a = group.a
        keys = [Signer(i.to_bytes(32, "big")) for i in range(1, 12_001)]
        blocks = [stranger_block(k) for k in keys]
        before = a.node.replica.digest()
        r = await push(http, a, encode_blocks(blocks))
        assert r.status_code == 204
        assert a.node.replica.digest() == before
        assert a.node.status()["refused"]["not_a_member"] >= 12_000
        assert len(a.node.door.tips) == 3 and len(a.node.replica.members()) == 3
        # a pull naming 12,000 strangers in its context is no burden either
        context = CausalContext()
        for k in keys[:9_000]:
            context.add(k.id, 1)
        r = await http.post(f"{a.url}/peer/pull", content=encode_pull(context))
        assert r.status_code == 200
        await group.intact(http)


# -- 7. a refused push holding the target's own id ----------------------------------------
async def test_refused_push_with_own_block_leaves_no_conflict(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b = group.a, group.b
        forger = SignedPeer("own-forger")
        own = forger.forge(a.node.id, a.node.door.tips[a.node.id], a.node.clock_ms())
        other = forger.forge(b.node.id, a.node.door.tips[b.node.id], a.node.clock_ms())
        # the node's own real blocks (duplicates), a forged own block, a forged other
        real, _ = _decode(await _pull_from(http, b, CausalContext()))
        mine = [blk for blk in real if blk.replica == a.node.id]
        for blocks in ([*mine, own], [other, own], [own, other], [*mine, other]):
            r = await push(http, a, encode_blocks(blocks))
            assert r.status_code == 400
            assert a.node.conflict is None
        # an own block far beyond the tip (a gap) is skipped, not a conflict
        gap = own._replace(first=own.first + 5, last=own.last + 5,
                           events=(own.events[0]._replace(seq=own.first + 5),))
        gap = gap._replace(body=encode_body(gap.events))
        r = await push(http, a, encode_blocks([gap]))
        assert r.status_code == 204 and a.node.conflict is None
        await group.intact(http)


# -- 8. replays ---------------------------------------------------------------------------
async def test_replayed_messages_change_nothing(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b, c = group.nodes
        # what a real push of b's carries: b's blocks as stored, with b's signed claims
        old = await _pull_from(http, b, CausalContext())
        await order(http, b.url, "sell", "2", "20")
        await order(http, c.url, "buy", "1", "20")
        await eventually(lambda: converged(a, b, c, events=8))
        await group.record_finals(http)
        claims_before = dict(a.node.door.claims)
        before = group.digests()
        for _ in range(3):
            for node in group.nodes:
                r = await push(http, node, old)
                assert r.status_code == 204
        assert group.digests() == before
        for replica, claim in claims_before.items():  # old claims are no news: none went back
            assert a.node.door.claims[replica].clock >= claim.clock
        await group.intact(http)


# -- 9. an evicted member -------------------------------------------------------------------
async def test_evicted_member_is_cut_off(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a, b, c = group.nodes
        m = member(group, "evictee")
        first = m.place("sell", "1", "50", now_ms=a.node.clock_ms() + 5)
        assert (await push(http, a, m.blocks([first]))).status_code == 204
        await eventually(lambda: all(n.node.door.tip(m.id).last == 1 for n in group.nodes))
        r = await http.post(f"{b.url}/evict", json={"replica": m.id}, headers=b.admin)
        assert r.status_code == 200, r.text
        await eventually(lambda: all(m.id not in n.node.replica.members() for n in group.nodes))
        later = m.place("buy", "1", "60", now_ms=a.node.clock_ms() + 5)
        for node in group.nodes:
            r = await push(http, node, m.blocks([later], a.node.clock_ms()))
            assert r.status_code == 204
            assert node.node.door.tip(m.id).last == 1
            assert node.node.status()["refused"]["past_its_replica's_cutoff"] >= 1
        await group.intact(http)


# -- 10. floods ---------------------------------------------------------------------------
FLOOD_WITHIN_S = 60.0


async def test_floods_are_bounded_and_status_keeps_answering(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a = group.a
        stranger = Signer.from_name("flooder")
        tiny = stranger_block(stranger)
        many = encode_blocks([tiny._replace(first=i + 1, last=i + 1)
                              for i in range(100_000)])  # 100,000 blocks (decoded first)
        r = await http.post(f"{a.url}/peer/push", content=many, timeout=FLOOD_WITHIN_S)
        assert r.status_code == 400  # block i claims seq i+1 but holds seq 1: malformed
        # 100,000 well-formed tiny blocks of strangers: skipped, node keeps answering
        blocks = []
        for i in range(100_000):
            event = tiny.events[0]._replace(seq=i + 1)
            blocks.append(Block(stranger.id, i + 1, i + 1, encode_body([event]), tiny.sig,
                                (event,)))
        body = encode_blocks(blocks)

        async def status_answers() -> None:
            with trio.fail_after(10):
                r = await http.get(f"{a.url}/status")
            assert r.status_code == 200

        async with trio.open_nursery() as inner:
            inner.start_soon(status_answers)
            # a liveness bound for the whole flood (seconds alone, more than the
            # client's usual 10 s on a busy machine)
            with trio.fail_after(FLOOD_WITHIN_S):
                r = await http.post(f"{a.url}/peer/push", content=body, timeout=FLOOD_WITHIN_S)
        assert r.status_code == 204
        # one huge block (over the peer body limit): 413 before it is read whole
        huge = b"\x00" * (a.node.config.peer_body_limit + 1)
        r = await push(http, a, huge)
        assert r.status_code == 413
        await group.intact(http)


# -- more: gaps, overlaps, joiners, crashes ---------------------------------------------------
async def test_gaps_and_overlaps_under_a_members_id_are_skipped(nursery):
    async with client() as http:
        group = await cluster(nursery, http)
        a = group.a
        m = member(group, "gappy")
        one = m.place("sell", "1", "70", now_ms=a.node.clock_ms() + 5)
        two = m.place("sell", "1", "71", now_ms=a.node.clock_ms() + 5)
        three = m.place("sell", "1", "72", now_ms=a.node.clock_ms() + 5)
        before = a.node.replica.digest()
        r = await push(http, a, m.blocks([three]))  # starts beyond the tip: a gap
        assert r.status_code == 204 and a.node.replica.digest() == before
        assert a.node.status()["refused"]["gap"] >= 1
        r = await push(http, a, m.blocks([one, three, two]))  # 3 skipped, and 2 after it
        assert r.status_code == 204 and a.node.door.tip(m.id).last == 1
        both = Block(m.id, 1, 2, encode_body([*one.events, *two.events]), two.sig,
                     (*one.events, *two.events))
        r = await push(http, a, m.blocks([both]))  # overlaps block 1: skipped, not re-cut
        assert r.status_code == 204 and a.node.door.tip(m.id).last == 1
        assert a.node.status()["refused"]["overlaps_a_block_held_here"] >= 1
        r = await push(http, a, m.blocks([two, three]))
        assert r.status_code == 204 and a.node.door.tip(m.id).last == 3
        await group.intact(http)


SPOOF_EVERY_S = 0.02  # how often the spoofing peer repeats its lie


async def _start_unready(nursery, *peers: str, **settings) -> Running:
    """A node started without waiting for it to join or catch up."""
    return await start(nursery, *peers, wait=False, **settings)


async def test_joining_node_cannot_be_founded_by_a_stranger(nursery):
    """A node waiting for its join answer takes no founding self-join from a push or from
    a pull answer: anyone can sign a self-join with a fresh key."""
    async with client() as http:
        a = await start(nursery)
        signer = Signer.from_name("usurper")
        usurper = Replica(signer.id, track_fresh=True)
        usurper.bootstrap(a.node.clock_ms(), key=signer.public)
        block = Door(usurper, signer.sign).seal(list(usurper.take_fresh()))
        fake = FakePeer()  # never admits anyone (404 to the join), answers pulls with its founding
        fake.answer = encode_blocks([block])
        await fake.serve(nursery)
        joiner = await _start_unready(nursery, fake.url)
        # asked to join (404); a node that holds nothing does not pull, so the fake's
        # founding can only come by push
        await eventually(lambda: joiner.node.peers[fake.url].failures > 0)
        assert fake.pulls == 0
        assert not joiner.node.replica.membership.founded
        r = await push(http, joiner, encode_blocks([block]))
        assert r.status_code == 204
        assert not joiner.node.replica.membership.founded
        assert signer.id not in joiner.node.replica.members()
        joiner.node.add_peer(a.url, sticky=True)  # now the real cluster admits it
        await eventually(lambda: joiner.node.joined and converged(a, joiner))
        assert signer.id not in joiner.node.replica.members()


async def test_kill_minus_nine_mid_load_keeps_the_signed_feed(nursery):
    with tempfile.TemporaryDirectory() as root:
        first = NodeProcess(os.path.join(root, "a"))
        await first.start()
        second = NodeProcess(os.path.join(root, "b"), first.url)
        try:
            await second.start()
            async with client() as http:
                await eventually(lambda: _joined(http, second))

                async def load(url: str) -> None:
                    for i in range(200):
                        try:
                            await http.post(f"{url}/orders", json={
                                "side": ("buy", "sell")[i % 2], "qty": "1",
                                "price": str(10 + i % 3)})
                        except Exception:
                            return

                async with trio.open_nursery() as inner:
                    inner.start_soon(load, first.url)
                    inner.start_soon(load, second.url)
                    await eventually(lambda: _events(http, second, 60))
                    second.kill()
                await second.start()

                async def same() -> bool:
                    sa = await get(http, first.url, "/status")
                    sb = await get(http, second.url, "/status")
                    return (sa["digest"] == sb["digest"] and sb["caught_up"]
                            and sa["conflict"] is None and sb["conflict"] is None
                            and sa["refused"]["messages"] == 0)

                await eventually(same, timeout=30)
                await eventually(lambda: _ready(http, second))
                await order(http, second.url, "sell", "1", "1")
                await eventually(same, timeout=30)
        finally:
            second.kill()
            first.kill()


async def _joined(http, proc) -> bool:
    return (await get(http, proc.url, "/status"))["joined"]


async def _events(http, proc, n: int) -> bool:
    return (await get(http, proc.url, "/status"))["events"] >= n


async def _ready(http, proc) -> bool:
    status = await get(http, proc.url, "/status")
    return status["caught_up"] and status["joined"]
