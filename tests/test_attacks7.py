"""Attacks on "encode an event once": signed bodies that are valid CBOR but not canonical.

A node hashes each event into its digest, and writes its row, from the bytes
of the signed block it came in (crdtbook/feedwire.py ``event_encodings``),
and only where those bytes are what the origin's ``encode_body`` writes. A
member holds a valid key and may sign any body that decodes: longer heads,
accounts of 23 or 24 bytes, unicode composed or not, the same events in a
second block version. Here such a member plays against real durable nodes
on 127.0.0.1, and every check compares against the computation from before
the change (``_event_hash`` of each event, re-encoded by cbor2):

* a body is sliced only where it is its events' canonical CBOR, byte for byte;
* every node's digest is that reference sum, and the nodes agree;
* every stored row decodes to the event the node holds, and a restart from
  the store gives the same digest;
* a digest read before a flush (or twice) hashes each event exactly once.
"""

from __future__ import annotations

import random

import cbor2

import crdtbook.replica as replica_module
from crdtbook.codec import CodecError, event_to_wire
from crdtbook.events import make_cancel, make_order
from crdtbook.feed import Tip, head_message, link
from crdtbook.feedwire import (
    block_from_wire,
    encode_blocks,
    encode_body,
    encodings,
    event_encodings,
)
from crdtbook.replica import _DIGEST_MODULUS, Replica, _event_hash
from node.store.sqlite import _event_body, _event_from_row

from .helpers import stored_events
from .nodes import client, eventually, start, trading_events
from .peers import SignedPeer
from .procs import NodeProcess, get
from .test_attacks import push

SIG = bytes(64)
UNITS = 10**8


# -- bodies a member can sign ---------------------------------------------------------
def _head(major: int, n: int, width: int | None) -> bytes:
    """A CBOR head; ``width`` bytes of argument (1, 2, 4, 8) even where fewer would do."""
    if width is None:
        if n < 24:
            return bytes([major << 5 | n])
        width = next(w for w in (1, 2, 4, 8) if n < 1 << (8 * w))
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | info]) + n.to_bytes(width, "big")


def stretched(value, rng: random.Random, odds: float) -> bytes:
    """``value`` in CBOR, each head made longer than it needs with ``odds``."""
    def width(n: int) -> int | None:
        if rng.random() >= odds:
            return None
        return rng.choice([w for w in (1, 2, 4, 8) if n < 1 << (8 * w)])

    if isinstance(value, int):
        return _head(0, value, width(value))
    if isinstance(value, str):
        raw = value.encode()
        return _head(3, len(raw), width(len(raw))) + raw
    return _head(4, len(value), width(len(value))) + b"".join(
        stretched(v, rng, odds) for v in value)


ACCOUNTS = ["", "a" * 23, "b" * 24, "c" * 31, "caf\u00e9", "cafe\u0301", "\u00df" * 11,
            "\u00df" * 12, "x" * 64]


def feed(rng: random.Random, replica: str, first: int, count: int, clock: int,
         accounts: list[str] = ACCOUNTS) -> list:
    """``count`` orders and cancels of ``replica`` from seq ``first``, clocks rising."""
    events = []
    for seq in range(first, first + count):
        clock += rng.choice([1, 23, 24, 255, 256, 65536])
        if rng.random() < 0.7:
            events.append(make_order(clock, replica, seq, rng.choice(["buy", "sell"]), "limit",
                                     rng.choice([1, 23, 24, 255, 256, 65536, 2**32]) * UNITS,
                                     rng.choice([1, 24, 2**16, 2**33]), rng.choice(accounts)))
        else:
            targets = [replica, "a", "r" * 24 if accounts is ACCOUNTS else "r" * 23]
            events.append(make_cancel(clock, replica, seq, rng.choice(targets),
                                      rng.choice([1, 23, 24, 2**32])))
    return events


def canonical(event) -> bytes:
    return cbor2.dumps(event_to_wire(event), canonical=True)


def reference_sum(events) -> int:
    """The digest's sum as computed before the change: every event encoded by cbor2."""
    return sum(map(_event_hash, events)) % _DIGEST_MODULUS


# -- 1. slices ------------------------------------------------------------------------------
def test_a_signed_body_is_sliced_only_where_it_is_its_events_canonical_cbor():
    rng = random.Random(18)
    counts = {"canonical": 0, "stretched": 0, "mutated": 0}
    for _ in range(3000):
        replica = rng.choice(["k" * 32, "a", "x" * 23, "x" * 24])
        events = feed(rng, replica, 1, rng.choice([1, 2, 3, 23, 24, 25]), 1 << 20)
        body = stretched([event_to_wire(e) for e in events], rng, rng.choice([0.0, 0.02, 0.3]))
        if rng.random() < 0.3:  # and any byte a careless or hostile encoder might change
            mutated = bytearray(body)
            at = rng.randrange(len(mutated))
            mutated[at] = rng.randrange(256)
            body = bytes(mutated)
        try:
            block = block_from_wire([replica, 1, body, SIG], "block")
        except CodecError:
            continue
        kind = ("canonical" if body == encode_body(block.events) else
                "stretched" if block.events == tuple(events) else "mutated")
        counts[kind] += 1
        found = event_encodings(block)
        if kind != "canonical":
            assert found is None, body  # only encode_body's exact bytes are cut
            continue
        if found is None:  # a field it leaves to cbor2 (24..31 bytes, a membership event)
            continue
        by_id = encodings([block])
        for event, (full, _) in zip(block.events, found, strict=True):
            assert full == canonical(event)
            row = _event_body(event, by_id)
            assert row == _event_body(event, {})
            assert _event_from_row(event.clock, event.replica, event.seq, row) == event
    assert min(counts.values()) > 100, counts  # every kind of body was reached


def test_a_block_without_decoded_events_is_not_sliced():
    """Blocks read back from the store carry no events (node/store/feedindex.py):
    slicing one must say None, not fail (the journal cuts every block it writes)."""
    event = make_order(1 << 20, "a", 1, "buy", "limit", UNITS, 1, "")
    block = block_from_wire(["a", 1, encode_body([event]), SIG], "block")
    assert event_encodings(block._replace(events=())) is None
    assert event_encodings(block._replace(body=b"\x80", events=())) is None
    assert encodings([block._replace(body=b"\x80", events=())]) == {}


# -- 2. the digest ---------------------------------------------------------------------
def test_the_digest_hashes_each_event_once_whenever_it_is_read():
    """Blocks of every kind merged in turn; the digest read before some flushes and
    not others, each flush's encodings handed in (some twice): the sum is always
    the reference's."""
    rng = random.Random(5)
    node, plain = Replica("n"), Replica("p")
    clock, seq, held = 1 << 20, 1, []
    for _ in range(60):
        events = feed(rng, "k" * 32, seq, rng.choice([1, 3, 24]), clock)
        clock, seq = events[-1].clock, seq + len(events)
        odds = rng.choice([0.0, 0.0, 0.2])
        body = stretched([event_to_wire(e) for e in events], rng, odds)
        block = block_from_wire(["k" * 32, events[0].seq, body, SIG], "block")
        for event in block.events:
            assert node.merge_event(event) and plain.merge_event(event)
        held.extend(block.events)
        if rng.random() < 0.3:
            node.digest()  # a status read before the flush: hashed the old way
        found = encodings([block])
        node.hash_pending(found)
        if rng.random() < 0.3:
            node.hash_pending(found)  # nothing pending: nothing hashed twice
        assert node._digest_sum == reference_sum(held)
    assert node.digest() == plain.digest()


# -- 3. real nodes ----------------------------------------------------------------------
def signed(member: SignedPeer, body: bytes, first: int, tip: Tip | None = None):
    """A block of ``member`` holding ``body`` as it is, chained after ``tip`` (its
    own tip by default, which then moves on) and signed with its key."""
    block = block_from_wire([member.id, first, body, SIG], "block")
    own = tip is None
    tip = member.door.tip(member.id) if own else tip
    chained = link(tip.hash, body)
    if own:
        member.door.tips[member.id] = Tip(block.last, chained)
    return block._replace(sig=member.signer.sign(head_message(member.id, block.last, chained)))


def holds_reference_digest(running) -> bool:
    replica = running.node.replica
    replica.digest()
    cut = replica._cutoff
    counted = [e for e in replica.events() if cut.get(e.replica) is None or e.seq <= cut[e.replica]]
    return replica._digest_sum == reference_sum(counted)


def rows_hold_the_events(running) -> None:
    """The store (rows and blocks) holds every event, and every row body kept for
    compaction is the event's own CBOR."""
    assert stored_events(running.node.store) == set(running.node.replica.events())
    journal = running.node.journal
    for kept in journal.bodies.values():
        if kept is not None:
            assert journal.kept_body(kept[0]) == _event_body(kept[0], {})


async def test_bodies_signed_any_way_give_the_same_digest_rows_and_restart(
        nursery, tmp_path, monkeypatch):
    rng = random.Random(11)
    anew = []  # events the digest encoded again (not sliced from their block)

    def counting(event):
        anew.append(event)
        return _event_hash(event)

    monkeypatch.setattr(replica_module, "_event_hash", counting)
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    await eventually(lambda: len(a.node.replica.members()) == 2 == len(b.node.replica.members()))
    m = SignedPeer("signs-any-cbor").admitted_by(a.node)
    await eventually(lambda: all(n.node.replica.is_member(m.id) for n in (a, b)))
    sent, seq, clock = 0, 1, 0
    async with client() as http:
        for round_ in range(12):
            clock = max(clock, a.node.clock_ms() << 16)  # a feed's clocks never go back
            events = feed(rng, m.id, seq, rng.choice([1, 2, 24]), clock)
            seq, clock = seq + len(events), events[-1].clock
            # every other block canonical (sliced), the others with longer heads
            body = (encode_body(events) if round_ % 2 else
                    stretched([event_to_wire(e) for e in events], rng, 0.3))
            block = signed(m, body, events[0].seq)
            to = (a, b)[round_ % 3 == 0]
            r = await push(http, to, encode_blocks([block]))  # no claim to break
            assert r.status_code == 204, r.text
            sent += len(events)
            # the other node takes it from this one (a push or a pull): a gap is skipped
            await eventually(lambda: all(n.node.door.tip(m.id).last == block.last  # noqa: B023
                                         for n in (a, b)))
            if round_ % 4 == 1:  # a status read while blocks wait for their flush
                assert (await http.get(f"{to.url}/status")).status_code == 200

    def settled(running) -> bool:
        return trading_events(running.node) == sent and not running.node.journal.pending

    await eventually(lambda: settled(a) and settled(b))
    assert a.node.replica.digest() == b.node.replica.digest()
    mine = [e for e in anew if e.replica == m.id]
    assert 0 < len(mine) < 2 * sent  # both ways were taken, on two nodes
    monkeypatch.undo()
    for running in (a, b):
        assert holds_reference_digest(running)
        rows_hold_the_events(running)
    digest = a.node.replica.digest()
    await a.stop()
    again = await start(nursery, b.url, data_dir=str(tmp_path / "a"))
    assert again.node.replica.digest() == digest
    assert holds_reference_digest(again)


async def test_the_same_events_signed_in_two_encodings_convict_alike(nursery, tmp_path):
    """A second block version with the very same events, only encoded otherwise:
    a fork all the same (the signature covers the bytes). Each node holds one
    version's events (one of them sliced, one not); both convict at one cut and
    keep the reference digest."""
    rng = random.Random(3)
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    await eventually(lambda: len(a.node.replica.members()) == 2 == len(b.node.replica.members()))
    m = SignedPeer("two-encodings").admitted_by(a.node)
    await eventually(lambda: all(n.node.replica.is_member(m.id) for n in (a, b)))
    async with client() as http:
        first = feed(rng, m.id, 1, 3, a.node.clock_ms() << 16)
        r = await push(http, a, m.blocks([signed(m, encode_body(first), 1)]))
        assert r.status_code == 204, r.text
        await eventually(lambda: all(n.node.door.tip(m.id).last == 3 for n in (a, b)))
        tip = m.door.tip(m.id)
        short = [n for n in ACCOUNTS if len(n.encode()) < 24]  # all sliced where canonical
        events = feed(rng, m.id, 4, 24, first[-1].clock, short)
        wire = [event_to_wire(e) for e in events]
        one = signed(m, encode_body(events), 4, tip)
        two = signed(m, stretched(wire, rng, 0.5), 4, tip)
        assert one.events == two.events and one.body != two.body
        assert event_encodings(one) is not None and event_encodings(two) is None
        assert (await push(http, a, m.blocks([one]))).status_code == 204
        assert (await push(http, b, m.blocks([two]))).status_code == 204
    await eventually(lambda: all(m.id in n.node.door.proofs for n in (a, b)))
    assert {n.node.door.proofs[m.id].cut for n in (a, b)} == {3}
    await eventually(lambda: a.node.replica.digest() == b.node.replica.digest()
                     and not a.node.journal.pending and not b.node.journal.pending)
    for running in (a, b):
        assert holds_reference_digest(running)
        rows_hold_the_events(running)


# -- 4. bodies that decode to no block ----------------------------------------------------
def _ints(*values: int) -> bytes:
    return b"".join(_head(0, v, None) for v in values)


def _text(value: str) -> bytes:
    raw = value.encode()
    return _head(3, len(raw), None) + raw


def hostile_bodies(member: str, seq: int, clock: int) -> dict[str, bytes]:
    """One order of ``member`` at ``seq``, its bytes bent every way a careless or
    hostile encoder might: valid CBOR mostly, none of it an order."""
    head = _ints(0) + _text(member) + _ints(seq, clock, 0, 0, UNITS)  # tag .. price
    qty, account = _ints(7), _text("")

    def order(*middle: bytes, count: int = 9) -> bytes:
        return b"\x81" + _head(4, count, None) + head + b"".join(middle)

    return {
        "indefinite array": b"\x81\x9f" + head + qty + account + b"\xff",
        "indefinite events": b"\x9f" + order(qty, account)[1:] + b"\xff",
        "indefinite text": order(qty, b"\x7f\x61a\xff"),
        "tag on qty": order(b"\xc0" + qty, account),
        "bignum of 10 bytes": order(b"\xc2\x4a\x01" + bytes(9), account),  # 2^72
        "bignum past the range": order(b"\xc2\x49" + b"\xff" * 9, account),
        "bignum below 2^64": order(b"\xc2\x49" + bytes(8) + b"\x07", account),
        "negative bignum": order(b"\xc3\x49\x01" + bytes(8), account),
        "seq past its range": b"\x81\x89" + _ints(0) + _text(member) + b"\x1b" + b"\xff" * 8
        + _ints(clock, 0, 0, UNITS) + qty + account,
        "float qty": order(b"\xfb\x40\x1c" + bytes(6), account),  # 7.0
        "half-float qty": order(b"\xf9\x47\x00", account),
        "NaN qty": order(b"\xf9\x7e\x00", account),
        "negative zero qty": order(b"\xf9\x80\x00", account),
        "negative qty": order(b"\x26", account),
        "true as qty": order(b"\xf5", account),
        "null account": order(qty, b"\xf6"),
        "bytes account": order(qty, b"\x41a"),
        "invalid UTF-8 account": order(qty, b"\x62\xc3\x28"),
        "surrogate in account": order(qty, b"\x63\xed\xa0\x80"),
        "account of 65 characters": order(qty, _text("y" * 65)),
        "unprintable account": order(qty, _text("a\nb")),
        "map for an event": b"\x81\xa1" + _ints(0) + _ints(1),
        "extra item": order(qty, account, _ints(0), count=10),
        "missing item": order(qty, count=8),
        "trailing bytes": order(qty, account) + b"\x00",
        "two events one seq": b"\x82" + order(qty, account)[1:] * 2,
        "no events": b"\x80",
        "nothing": b"",
    }


async def test_bodies_that_are_no_block_are_refused_and_change_nothing(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    m = SignedPeer("bends-every-byte").admitted_by(a.node)
    clock = a.node.clock_ms() << 16
    before = a.node.replica.digest(), len(a.node.replica.events())
    tip = m.door.tip(m.id)
    async with client() as http:
        for what, body in hostile_bodies(m.id, 1, clock).items():
            chained = link(tip.hash, body)
            sig = m.signer.sign(head_message(m.id, 1, chained))
            message = cbor2.dumps({"v": 1, "kind": "blocks", "blocks": [[m.id, 1, body, sig]],
                                   "claims": []}, canonical=True)
            r = await push(http, a, message)
            assert r.status_code == 400, (what, r.status_code, r.text)
            assert r.json()["error"] == "bad_blocks", what
        # nothing changed, nothing is pending, and the member's real block is taken
        assert not a.node.journal.pending
        assert (a.node.replica.digest(), len(a.node.replica.events())) == before
        assert a.node.door.tip(m.id).last == 0
        good = signed(m, encode_body(feed(random.Random(1), m.id, 1, 3, clock)), 1)
        assert (await push(http, a, encode_blocks([good]))).status_code == 204
    await eventually(lambda: a.node.door.tip(m.id).last == 3 and not a.node.journal.pending)
    assert holds_reference_digest(a)
    rows_hold_the_events(a)


# -- 5. the largest amounts travel -------------------------------------------------------
async def test_the_largest_amounts_reach_every_peer(nursery, tmp_path):
    """An amount is at most 10^12 (10^20 units, amount.py): past 2^64 units its CBOR
    is a bignum (a tag), which every peer's scan refused. The node took the order
    (201), sealed it, and its feed stopped there for ever: no later order of its
    reached a peer, and nothing said so. A positive bignum of 9 bytes (what cbor2
    writes for 2^64..2^72) now passes the scan; larger ones, and every other tag,
    are still refused."""
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    await eventually(lambda: len(a.node.replica.members()) == 2 == len(b.node.replica.members()))
    async with client() as http:
        for side, qty, price in (("sell", "1000000000000", "1000000000000"),
                                 ("sell", "184467440737.09551616", "1"),  # 2^64 units
                                 ("buy", "1", "999999999999.99999999"),
                                 ("sell", "1", "10")):  # and an ordinary one after them
            r = await http.post(a.url + "/orders", json={"side": side, "qty": qty, "price": price})
            assert r.status_code == 201, r.text
    await eventually(lambda: trading_events(b.node) == 4 and not b.node.journal.pending
                     and not a.node.journal.pending)
    assert a.node.replica.digest() == b.node.replica.digest()
    assert max(e.qty for e in b.node.replica.events() if e.kind == "order") == 10**20
    for running in (a, b):
        assert holds_reference_digest(running)
        rows_hold_the_events(running)
    digest = b.node.replica.digest()
    await b.stop()
    again = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    assert again.node.replica.digest() == digest


# -- 6. kill -9 ------------------------------------------------------------------------------
async def test_a_node_killed_while_taking_bodies_of_every_kind_comes_back_with_their_digest(
        nursery, tmp_path):
    """A real process takes a member's blocks (canonical and not), is killed with
    SIGKILL right after a push, and restarts from its rows (cut from those blocks):
    its digest is its peer's, which is the reference."""
    rng = random.Random(9)
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = NodeProcess(str(tmp_path / "b"), a.url)
    await b.start()
    try:
        await eventually(lambda: len(a.node.replica.members()) == 2)
        m = SignedPeer("killed-mid-load").admitted_by(a.node)
        async with client(timeout=5) as http:
            async def b_knows_m() -> bool:
                return m.id in (await get(http, b.url, "/status"))["members"]

            await eventually(b_knows_m)
            seq, clock, last = 1, 0, 0
            for round_ in range(10):
                clock = max(clock, a.node.clock_ms() << 16)
                events = feed(rng, m.id, seq, rng.choice([1, 2, 24]), clock)
                seq, clock = seq + len(events), events[-1].clock
                body = (encode_body(events) if round_ % 2 else
                        stretched([event_to_wire(e) for e in events], rng, 0.3))
                block = signed(m, body, events[0].seq)
                to = b.url if round_ < 6 else a.url  # b, until it was killed
                r = await http.post(f"{to}/peer/push", content=encode_blocks([block]))
                assert r.status_code == 204, r.text
                last = block.last
                if round_ == 5:
                    b.kill()  # the moment its last push was acknowledged
                    await b.start()
                await eventually(lambda: a.node.door.tip(m.id).last == last)  # noqa: B023

            async def same_digest() -> bool:
                return (await get(http, b.url, "/status"))["digest"] == a.node.replica.digest()

            await eventually(lambda: not a.node.journal.pending)
            await eventually(same_digest, timeout=30)
        assert trading_events(a.node) == seq - 1
        assert holds_reference_digest(a)
        rows_hold_the_events(a)
    finally:
        b.kill()
