"""Signed feeds under attack: chain and head verification, proofs, convictions, detection.

The model: a cluster founded by ``f`` with members ``o`` (an origin whose
feed is cut into blocks) and receivers. Tampering with any byte of a block,
or delivering blocks out of order, must never get an event in that the origin
did not sign; the untampered feed is always taken in full. An origin that
signs two versions of its feed, or breaks a signed claim, is convicted at the
same cut everywhere, and replicas holding different versions then agree.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.codec import CodecError
from crdtbook.door import Door, DoorError
from crdtbook.feed import Block, SignedClaim, claim_message, head_message, link
from crdtbook.feedwire import (
    decode_blocks,
    decode_blocks_message,
    decode_pull_message,
    encode_blocks,
    encode_body,
    encode_pull,
)
from crdtbook.keys import Signer
from crdtbook.proofs import FORK, PROMISE, broken_promise, check, fork
from crdtbook.replica import Replica

T0 = 1_700_000_000_000


class Node:
    def __init__(self, name: str) -> None:
        self.signer = Signer.from_name(name)
        self.replica = Replica(self.signer.id)
        self.door = Door(self.replica, self.signer.sign)
        self.suspects: set[str] = set()

    @property
    def id(self) -> str:
        return self.signer.id

    def seal(self, delta) -> Block:
        return self.door.seal(sorted(e for _, _, e in delta.entries()))

    def place(self, side: str, qty: int, price: int, now: int) -> Block:
        return self.seal(self.replica.place(side, str(qty), str(price), now_ms=now).delta)

    def view(self):
        convicted = self.replica.membership.convicted
        book = self.replica.book()
        return (self.replica.digest(), book, self.replica.fills(),
                [o for o in self.replica.orders()
                 if o.dot.replica not in convicted or o.dot.seq <= convicted[o.dot.replica]])


def cluster(*names: str) -> list[Node]:
    """``names[0]`` founds the cluster and admits the others; everyone holds the genesis."""
    nodes = [Node(n) for n in names]
    founder = nodes[0]
    blocks = [founder.seal(founder.replica.bootstrap(T0, founder.signer.public))]
    blocks += [founder.seal(founder.replica.join(n.id, T0, n.signer.public)) for n in nodes[1:]]
    for node in nodes[1:]:
        node.door.admit(blocks)
    return nodes


def pull(a: Node, b: Node) -> None:
    """One pull from a to b and its answer, through the codec, as the fuzzer and node do."""
    request = encode_pull(a.replica.context(), a.door.pull_tips().items(),
                          a.door.outgoing_claims(a.replica.claim(T0)),
                          skips=a.door.skips(a.suspects), convicted=a.door.convictions())
    p = decode_pull_message(request)
    b.door.admit([], p.claims)
    answer = b.door.answer(p.tips)
    payload = encode_blocks(answer.blocks, b.door.outgoing_claims(b.replica.claim(T0)),
                            proofs=b.door.proofs_for(p.convicted),
                            forks=b.door.fork_answer(p.skips), suspects=answer.suspects)
    m = decode_blocks_message(payload)
    a.door.admit(m.blocks, m.claims, proofs=m.proofs, forks=m.forks)
    a.suspects = {r for r in m.suspects if r not in a.replica.membership.convicted}


def sync(nodes: list[Node], rounds: int = 4) -> None:
    for _ in range(rounds):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    pull(a, b)


def sign_block(signer: Signer, prev: bytes, events: list) -> Block:
    body = encode_body(events)
    sig = signer.sign(head_message(signer.id, events[-1].seq, link(prev, body)))
    return Block(signer.id, events[0].seq, events[-1].seq, body, sig, tuple(events))


# -- chain and head verification against a model --------------------------------
def origin_feed(cuts: list[int]) -> tuple[list[Node], list[Block]]:
    """f founds, o trades; o's events (one order each) sealed in blocks of ``cuts`` sizes."""
    nodes = cluster("f", "o", "r")
    o = nodes[1]
    blocks, now = [], T0 + 1
    for size in cuts:
        events = []
        for _ in range(size):
            now += 1
            placed = o.replica.place("buy", "1", str(90 + now % 7), now_ms=now)
            events.extend(e for _, _, e in placed.delta.entries())
        blocks.append(o.door.seal(events))
    return nodes, blocks


def held_feed(node: Node, origin: str) -> list:
    return [e for e in node.replica.events() if e.replica == origin]


cuts = st.lists(st.integers(1, 3), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(cuts, st.data())
def test_untampered_feed_is_taken_whole_and_any_tampered_byte_is_refused(sizes, data):
    nodes, blocks = origin_feed(sizes)
    o, r = nodes[1], nodes[2]
    original = held_feed(o, o.id)
    which = data.draw(st.integers(0, len(blocks) - 1))
    field = data.draw(st.sampled_from(("body", "sig")))
    raw = getattr(blocks[which], field)
    at = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(raw)
    tampered[at] ^= flip
    wire = [*blocks]
    wire[which] = blocks[which]._replace(**{field: bytes(tampered)})
    digest = r.replica.digest()
    try:
        got, _ = decode_blocks(encode_blocks(wire))
        r.door.admit(got)
    except (CodecError, DoorError):
        assert r.replica.digest() == digest  # refused whole: nothing changed
    held = held_feed(r, o.id)
    assert held == original[:len(held)]  # only what the origin signed, as a prefix
    assert len(held) <= blocks[which].first - 1  # nothing from the tampered block on
    r.door.admit(blocks)  # the real feed still goes in, whole
    assert held_feed(r, o.id) == original
    assert r.replica.digest() == o.replica.digest()


@settings(max_examples=60, deadline=None)
@given(cuts, st.data())
def test_reordered_or_partial_delivery_takes_only_a_prefix_then_the_rest(sizes, data):
    nodes, blocks = origin_feed(sizes)
    o, r = nodes[1], nodes[2]
    original = held_feed(o, o.id)
    order = data.draw(st.lists(st.sampled_from(range(len(blocks))), max_size=2 * len(blocks)))
    r.door.admit([blocks[i] for i in order])
    held = held_feed(r, o.id)
    assert held == original[:len(held)]
    prefix = 0
    for i in order:  # the model: the next block goes in, a duplicate is ignored, and after
        if i == prefix:  # a gap the rest of the origin's blocks in the message waits
            prefix += 1
        elif i > prefix:
            break
    assert len(held) == sum(len(b.events) for b in blocks[:prefix])
    r.door.admit(blocks)
    assert held_feed(r, o.id) == original


def test_a_block_under_another_members_id_is_refused_whole():
    nodes, blocks = origin_feed([1, 1])
    f, o, r = nodes
    fake = o.replica.state.get(o.id, 1)._replace(seq=3, clock=T0 << 17)
    forged = sign_block(f.signer, o.door.tip(o.id).hash, [fake])  # f's key, o's id
    forged = forged._replace(replica=o.id)
    r.door.admit(blocks)
    before = r.view()
    with pytest.raises(DoorError):
        r.door.admit([forged])
    assert r.view() == before and not r.door.proofs


# -- equivocation ------------------------------------------------------------------
def forked(nodes: list[Node], e: Node):
    """e places one order everyone gets, then two versions of its next order."""
    common = e.place("sell", 2, 100, T0 + 10)
    prev = e.door.tip(e.id).hash
    a = e.place("sell", 3, 101, T0 + 20)
    twin = a.events[0]._replace(qty=a.events[0].qty * 2)
    b = sign_block(e.signer, prev, [twin])
    after = e.place("sell", 1, 102, T0 + 30)  # on version A only
    return common, a, b, after


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(6)), st.integers(0, 2))
def test_equivocation_converges_whatever_the_delivery_order(order, third):
    nodes = cluster("f", "x", "y", "e")
    f, x, y, e = nodes
    correct = [f, x, y]
    common, a, b, after = forked(nodes, e)
    buy = x.place("buy", 4, 101, T0 + 25)
    deliveries = [
        (x, [common, a, after]),
        (y, [common, b]),
        ([f, x, y][third], [common, a if third != 1 else b]),
        (f, [buy]), (y, [buy]), (f, [common]),
    ]
    for i in order:
        node, blocks = deliveries[i]
        node.door.admit(blocks)
    sync(correct)
    views = [n.view() for n in correct]
    assert views[0] == views[1] == views[2]
    for n in correct:
        assert n.replica.membership.convicted == {e.id: common.last}
        assert n.door.proofs[e.id].kind == FORK
        assert n.replica.frontier_violations == 0
    # the order both versions disagree on is rejected everywhere, the common one stands
    order_a = x.replica.order((e.id, a.first))
    assert order_a.status == "rejected" and order_a.reason == "equivocation"
    assert f.replica.order((e.id, common.first)).status != "rejected"


def test_equivocator_stops_counting_for_finality():
    f, x, e = cluster("f", "x", "e")
    common, a, b, after = forked([f, x, e], e)
    f.door.admit([common, a])
    x.door.admit([common, b])
    sync([f, x])
    assert f.replica.membership.convicted == {e.id: common.last}
    assert e.id not in f.replica.members()
    later = f.place("buy", 1, 90, T0 + 5_000)
    x.door.admit([later])
    sync([f, x])
    # e sends nothing more (no claim), yet F passes f's later order on both
    assert f.replica.frontier() >= later.events[0].clock
    assert x.replica.frontier() >= later.events[0].clock


def test_an_answer_racing_the_other_version_is_skipped_not_refused():
    """x pulls f naming ``common``; before the answer lands, x takes version B (and a
    block sealed on it with the same events as A's next block). The answer's A blocks
    are skipped as another version, never refused as forgeries; the fork is proven."""
    f, x, e = cluster("f", "x", "e")
    common, a, b, after = forked([f, x, e], e)
    # version B continues with the very events of A's next block, signed on B's chain
    prev_b = link(_boundary(common, e), b.body)
    b_next = sign_block(e.signer, prev_b, list(after.events))
    assert b_next.body == after.body and b_next.sig != after.sig
    f.door.admit([common, a, after])
    x.door.admit([common])
    answer = f.door.answer(x.door.pull_tips())  # the answer to x's pull, made now
    x.door.admit([b, b_next])  # the other version arrives meanwhile
    admission = x.door.admit(answer.blocks)  # no DoorError
    assert admission.skipped["another version of a block held here"] == 1
    assert admission.skipped["gap"] == 1  # the rest of e's feed in that answer
    assert x.replica.membership.convicted == {e.id: common.last}
    sync([f, x])
    assert f.view() == x.view()


def _boundary(block: Block, origin: Node) -> bytes:
    """The chain hash after ``block`` in ``origin``'s own feed."""
    return origin.door.index.block_ending(origin.id, block.last).hash


def test_recut_feed_is_a_fork_found_by_the_skip_list():
    """Same events cut differently is two versions too: found by the detection protocol."""
    f, x, e = cluster("f", "x", "e")
    start = e.door.tip(e.id).hash
    events = []
    for i in range(4):
        placed = e.replica.place("sell", "1", str(100 + i), now_ms=T0 + 10 + i)
        events.extend(ev for _, _, ev in placed.delta.entries())
    whole = e.door.seal(events)  # version A: one block 1-4
    parts, prev = [], start
    for ev in events:  # version B: four blocks
        parts.append(sign_block(e.signer, prev, [ev]))
        prev = link(prev, parts[-1].body)
    f.door.admit([whole])
    x.door.admit(parts[:3])  # x's tip (3) is not a boundary of f's version
    pull(x, f)
    assert x.suspects == {e.id}
    pull(x, f)  # skips -> the evidence -> a proof
    assert x.replica.membership.convicted == {e.id: 0}
    sync([f, x])
    assert f.replica.membership.convicted == {e.id: 0}
    assert f.view() == x.view()


# -- broken promises -----------------------------------------------------------------
def lie(node: Node, ahead: int = 60_000 << 16) -> SignedClaim:
    claim = node.replica.claim(T0 + 10)
    clock = claim.clock + ahead
    return SignedClaim(node.id, claim.seq, clock,
                       node.signer.sign(claim_message(node.id, claim.seq, clock)))


@pytest.mark.parametrize("claim_first", [True, False])
def test_broken_promise_convicts_the_liar(claim_first):
    f, x, liar = cluster("f", "x", "l")
    honest = liar.place("sell", 1, 100, T0 + 5)
    promise = lie(liar)
    broken = liar.place("sell", 2, 101, T0 + 20)  # after the claim's seq, below its clock
    for node in (f, x):
        node.door.admit([honest])
    if claim_first:
        f.door.admit([], [promise])
        f.door.admit([broken])
    else:
        f.door.admit([broken])
        f.door.admit([], [promise])
    x.door.admit([broken])  # x never saw the claim: takes it
    assert f.replica.membership.convicted == {liar.id: honest.last}
    proof = f.door.proofs[liar.id]
    assert proof.kind == PROMISE and proof.fault == broken.first
    assert check(proof, liar.signer.public)
    sync([f, x])
    assert x.replica.membership.convicted == {liar.id: honest.last}
    assert f.view() == x.view()
    assert x.replica.order((liar.id, broken.first)).reason == "equivocation"



def test_a_proof_that_comes_with_its_origins_join_counts_at_once():
    """A new replica's first answer brings the joins and the proofs together. The proof
    must count in that very message (the join in it names the key to check it with):
    dropped as a stranger's, the liar's blocks past its cut, fetched from the liar
    itself next, got in first (fuzz seed 90021: an evict the liar signed past its cut
    reached back below F)."""
    f, x, liar = cluster("f", "x", "l")
    honest = liar.place("sell", 1, 100, T0 + 5)
    promise = lie(liar)
    broken = liar.place("sell", 2, 101, T0 + 20)
    f.door.admit([honest])
    f.door.admit([], [promise])
    f.door.admit([broken])
    assert f.replica.membership.convicted == {liar.id: honest.last}
    n = Node("n")
    f.seal(f.replica.join(n.id, T0 + 30, n.signer.public))
    pull(n, f)
    assert n.replica.membership.convicted == {liar.id: honest.last}
    assert n.door.proofs[liar.id] == f.door.proofs[liar.id]
    taken = n.door.admit([broken], [promise])
    assert not taken.blocks and n.door.tip(liar.id).last == honest.last


def test_a_proof_whose_origin_this_message_does_not_admit_is_not_kept():
    """A join in a message names the key a proof is checked with, but the proof is kept
    only if that join is taken here: a stranger's proof takes no space."""
    f, x, liar = cluster("f", "x", "l")
    liar.place("sell", 1, 100, T0 + 5)
    promise = lie(liar)
    broken = liar.place("sell", 2, 101, T0 + 20)
    proof = broken_promise(promise, liar.door.index.block_ending(liar.id, broken.last).prev,
                           broken)
    assert check(proof, liar.signer.public)
    n = Node("n")
    bootstrap, _, liar_join = (f.door.index.block_ending(f.id, s).block for s in (1, 2, 3))
    assert liar_join.events[0].target == liar.id
    # x's join left out: the liar's join is a gap here, so the liar stays a stranger to n
    taken = n.door.admit([bootstrap, liar_join], proofs=[proof])
    assert taken.proofs == () and [v.block for v in taken.blocks] == [bootstrap]
    assert n.replica.membership.convicted == {} and not n.door.proofs



def test_a_block_breaking_a_claim_in_its_own_message_is_never_taken():
    """A liar that did not hold a member's order evicts it past its lie, and sends the
    evict with the lie: x must find the broken promise before taking the block, or the
    evict retires an order already final at x (an event below F)."""
    f, x, liar, v = cluster("f", "x", "l", "v")
    order = v.place("sell", 1, 100, T0 + 5)
    f.door.admit([order])
    x.door.admit([order])
    for a in (f, liar, v):  # every member promises past the order (liar: its honest claim)
        x.door.admit([], [a.door.own_claim(a.replica.claim(T0 + 50))])
    assert x.replica.frontier() >= order.events[0].clock  # the order is final at x
    promise = lie(liar)
    evict = liar.seal(liar.replica.evict(v.id, T0 + 70))  # the liar never got v's order
    assert evict.events[0].last_seq == 0 and evict.events[0].clock <= promise.clock
    taken = x.door.admit([evict], [promise])
    assert x.replica.frontier_violations == 0
    assert not taken.blocks and x.replica.membership.convicted == {liar.id: evict.first - 1}
    assert x.replica.order((v.id, order.first)).status == "open"


# -- proofs on the wire -----------------------------------------------------------------
def proofs_of(e: Node, common: Block, a: Block, b: Block):
    prev = link(e.door.index.block_ending(e.id, common.last).prev, common.body)
    claim = SignedClaim(e.id, common.last, a.events[0].clock,
                        e.signer.sign(claim_message(e.id, common.last, a.events[0].clock)))
    return fork(prev, a, b), broken_promise(claim, prev, a)


def test_proofs_round_trip_through_the_codec():
    f, x, e = cluster("f", "x", "e")
    common, a, b, _ = forked([f, x, e], e)
    both = list(proofs_of(e, common, a, b))
    message = decode_blocks_message(encode_blocks([], [], proofs=both))
    assert message.proofs == both
    assert all(check(p, e.signer.public) for p in message.proofs)
    assert [p.cut for p in message.proofs] == [common.last, common.last]
    x.door.admit([common])
    x.door.admit([], proofs=message.proofs[1:])
    assert x.replica.membership.convicted == {e.id: common.last}


@pytest.mark.parametrize("kind", ["fork", "promise"])
@pytest.mark.parametrize("part", ["block sig", "other body", "claim sig", "claim clock"])
def test_a_tampered_proof_refuses_the_message_whole(kind, part):
    f, x, e = cluster("f", "x", "e")
    common, a, b, _ = forked([f, x, e], e)
    proof = dict(zip(("fork", "promise"), proofs_of(e, common, a, b), strict=True))[kind]
    if part == "block sig":
        proof = proof._replace(block=proof.block._replace(sig=bytes(64)))
    elif part == "other body" and kind == "fork":
        twin = proof.other.events[0]._replace(qty=7)
        proof = proof._replace(other=proof.other._replace(body=encode_body([twin]),
                                                          events=(twin,)))
    elif part == "claim sig" and kind == "promise":
        proof = proof._replace(claim=proof.claim._replace(sig=f.signer.sign(
            claim_message(e.id, proof.claim.seq, proof.claim.clock))))
    elif part == "claim clock" and kind == "promise":
        proof = proof._replace(claim=proof.claim._replace(clock=proof.claim.clock + 1))
    else:
        proof = proof._replace(prev=bytes(32))  # chains from a hash never signed
    x.door.admit([common])
    before = x.view()
    payload = encode_blocks([f.place("buy", 1, 90, T0 + 40)], [], proofs=[proof])
    try:
        message = decode_blocks_message(payload)
    except CodecError:
        return  # refused by the codec already
    with pytest.raises(DoorError):
        x.door.admit(message.blocks, message.claims, proofs=message.proofs)
    assert x.view() == before and not x.door.proofs
    assert x.replica.membership.convicted == {}
