"""Encode an event once: the digest and the store's rows reuse the bytes of its signed block."""

from __future__ import annotations

import random

import cbor2

import crdtbook.replica as replica_module
from crdtbook.codec import event_to_wire
from crdtbook.events import MAX_CLOCK, MAX_SEQ, MEMBER, make_cancel, make_order
from crdtbook.feedwire import block_from_wire, encode_body, encodings, event_encodings
from crdtbook.replica import Replica
from node.store.sqlite import _event_body

from .helpers import stored_events
from .nodes import client, eventually, start, trading_events

SIG = b"s" * 64
_EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]


def _number(rng: random.Random, high: int, low: int = 1) -> int:
    return max(low, min(high, rng.choice([*_EDGES, rng.randrange(high)])))


def _events(rng: random.Random, replica: str, count: int) -> list:
    events = []
    for seq in range(1, count + 1):
        clock = _number(rng, MAX_CLOCK)
        if rng.random() < 0.7:
            events.append(make_order(clock, replica, seq, rng.choice(["buy", "sell"]), "limit",
                                     _number(rng, 2**64 - 1), _number(rng, 2**64 - 1),
                                     rng.choice(["", "alice", "b" * 23, "c" * 24])))
        else:
            events.append(make_cancel(clock, replica, seq, rng.choice(["a", "k" * 32, "z" * 30]),
                                      _number(rng, MAX_SEQ)))
    return events


def _sliceable(text: str) -> bool:
    return len(text) < 24 or len(text) == 32


def test_slices_of_a_block_are_each_events_canonical_cbor_and_its_row_body():
    rng = random.Random(7)
    sliced = 0
    for _ in range(1500):
        replica = rng.choice(["a", "n1", "x" * 23, "x" * 24, "k" * 32])
        events = _events(rng, replica, rng.choice([1, 2, 23, 24, 30]))
        block = block_from_wire([replica, 1, encode_body(events), SIG], "block")
        found = event_encodings(block)
        expected = _sliceable(replica) and all(
            len(e.account) < 24 if e.kind == "order" else _sliceable(e.target_replica)
            for e in events)
        assert (found is not None) == expected, events
        if found is None:
            continue
        sliced += 1
        by_id = encodings([block])
        for event, (full, tail) in zip(block.events, found, strict=True):
            assert full.endswith(tail)
            assert full == cbor2.dumps(event_to_wire(event), canonical=True)
            assert _event_body(event, by_id) == _event_body(event, {})  # the row's body
    assert sliced > 300  # the cases above reach the slicing often, not only the fallback


def test_a_body_its_origin_did_not_encode_canonically_is_decoded_but_not_sliced():
    event = make_order(5, "a", 1, "buy", "limit", 7, 9, "")
    canonical = encode_body([event])
    assert event_encodings(block_from_wire(["a", 1, canonical, SIG], "block")) is not None
    longer = canonical.replace(b"\x61a\x01\x05", b"\x61a\x18\x01\x05")  # seq 1 in two bytes
    assert longer != canonical
    block = block_from_wire(["a", 1, longer, SIG], "block")
    assert block.events == (event,)
    assert event_encodings(block) is None
    trailing = block._replace(body=canonical + b"\x00")
    assert event_encodings(trailing) is None


def test_the_digest_hashes_the_same_bytes_with_or_without_the_blocks_slices():
    rng = random.Random(3)
    events = _events(rng, "k" * 32, 40)
    events = [e._replace(clock=1000 + e.seq)  # a feed's clocks increase
              for e in events if e.kind != "order" or len(e.account) < 24]
    events = [e._replace(seq=i + 1) if e.kind == "order" else
              e._replace(seq=i + 1, target_replica="a") for i, e in enumerate(events)]
    block = block_from_wire(["k" * 32, 1, encode_body(events), SIG], "block")
    plain, sliced, foreign = Replica("p"), Replica("q"), Replica("r")
    for replica in (plain, sliced, foreign):
        assert sum(replica.merge_event(e) for e in block.events) == len(events)
    found = encodings([block])
    assert len(found) == len(events)
    sliced.hash_pending(found)
    assert sliced.digest() == plain.digest()
    # an entry cut from another event object (however equal) is not used: its id
    # could be reused by an unrelated event once the first one is gone
    other = {id(e): (e._replace(), (b"junk", b"")) for e in foreign._unhashed}
    foreign.hash_pending(other)
    assert foreign.digest() == plain.digest()


async def test_a_durable_cluster_hashes_and_stores_events_from_their_blocks(
        nursery, tmp_path, monkeypatch):
    encoded_anew = []
    real_hash = replica_module._event_hash

    def counting(event):
        encoded_anew.append(event)
        return real_hash(event)

    monkeypatch.setattr(replica_module, "_event_hash", counting)
    # no digest read while events wait for their flush (the helpers' nodes do not
    # compact): it would hash them before their blocks exist, correctly, the old way
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    await eventually(lambda: len(a.node.replica.members()) == 2)
    async with client() as http:
        for i, (node, side) in enumerate([(a, "sell"), (b, "buy"), (a, "sell"), (b, "buy")]):
            r = await http.post(node.url + "/orders",
                                json={"side": side, "qty": str(i + 1), "price": "10"})
            assert r.status_code == 201
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "5", "price": "99"})
        dot = r.json()["order"]["id"]
        assert (await http.delete(f"{a.url}/orders/{dot}")).status_code == 200

    def settled(running) -> bool:
        return trading_events(running.node) == 6 and not running.node.journal.pending

    await eventually(lambda: settled(a) and settled(b))
    assert a.node.replica.digest() == b.node.replica.digest()
    assert [e for e in encoded_anew if e.kind != MEMBER] == []  # every order and cancel sliced
    for running in (a, b):
        assert stored_events(running.node.store) == set(running.node.replica.events())
        # the rows compaction will write: every order's and cancel's body cut from
        # its block at arrival, the bytes cbor2 makes of it
        bodies = running.node.journal.bodies
        for event in running.node.replica.events():
            if event.kind != MEMBER:
                assert bodies[id(event)][0] is event
                assert running.node.journal.kept_body(event) == _event_body(event, {})
