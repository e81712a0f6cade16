"""The codec's proven path against its plain one.

A delta whose one long array the scan proved (``cborscan.scan_proving``:
every entry an order or a cancel in exactly the pattern's shape) is decoded
without type tests (``codec._proven_events``). That must change nothing but
speed: for any such message the same delta, or the same refusal in the same
words, as ``events_from_wire``'s way. Fields are drawn at and across every
range edge, with ids and accounts valid and not; the proof must hold for
most of them, and must not for messages holding a second long array.
A signed block's proven body (``feedwire.block_from_wire``, built by
``codec._proven_block``) is held the same way to ``events_from_wire`` and
the block's replica and seq check.
"""

from __future__ import annotations

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook import codec
from crdtbook.amount import MAX_UNITS
from crdtbook.cborscan import scan_proving
from crdtbook.clock import MAX_CLOCK
from crdtbook.dot import MAX_SEQ

IDS = st.sampled_from(["a" * 32, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz", "-" + "b" * 31,
                       "c" * 31 + "\u00e9"[:1], "d" * 31 + " ", "e" * 32])
VALID_IDS = ("a" * 32, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz")
EDGES = (0, 1, 2, 4, 5, 23, 24, 255, 2**30, MAX_SEQ, MAX_SEQ + 1, MAX_CLOCK, MAX_UNITS,
         MAX_UNITS + 1, 2**64 - 1)
UINT = st.one_of(st.integers(1, 40), st.sampled_from(EDGES), st.integers(0, 2**64 - 1))
SMALL = st.one_of(st.integers(0, 4), st.integers(0, 23))
ACCOUNT = st.one_of(st.just(""), st.sampled_from(["desk-1", "tab\there", "x" * 23]),
                    st.text(max_size=7))
ORDER = st.tuples(st.just(0), IDS, UINT, UINT, SMALL, SMALL, UINT, UINT, ACCOUNT).map(list)
CANCEL = st.tuples(st.just(1), IDS, UINT, UINT, IDS, UINT).map(list)
EVENTS = st.lists(st.one_of(ORDER, ORDER, ORDER, CANCEL), min_size=24, max_size=60)


def message(items: list, extra: list | None = None) -> bytes:
    """A delta of ``items`` whose context covers each one's dot (when it can)."""
    tops: dict = {}
    for item in items:
        if isinstance(item[1], str) and isinstance(item[2], int):
            tops[item[1]] = max(tops.get(item[1], 0), min(item[2], MAX_SEQ))
    body = {"v": 1, "kind": "delta", "events": items,
            "context": [[r, top, []] for r, top in sorted(tops.items())]}
    if extra is not None:
        body["extra"] = extra
    return cbor2.dumps(body, canonical=True)


plain_decode = codec._total(lambda data: codec._delta_from_message(codec._loads(data, "delta")))


def outcome(decode, data: bytes) -> tuple:
    try:
        delta = decode(data)
    except codec.CodecError as exc:
        return ("refused", str(exc))
    # the store's dicts in their order too (the replay files what it adopts in it)
    return ("delta", [(r, list(seqs.items())) for r, seqs in delta.store.items()],
            delta.context)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.randoms(use_true_random=False))
def test_a_proven_array_decodes_as_the_plain_way(items, rnd):
    if rnd.random() < 0.7:  # valid but for one field at an edge
        for item in items:
            item[1] = rnd.choice(VALID_IDS)
            item[2] = rnd.randint(1, 50)
            item[3] = rnd.randint(1, 2**62)
            if item[0] == 0:
                item[4], item[5] = rnd.randint(0, 1), rnd.choice((0, 0, 2, 3, 4))
                item[6] = 0 if item[5] == 1 else rnd.randint(1, 10**9)
                item[7] = rnd.randint(1, 10**9)
                item[8] = rnd.choice(("", "desk-1"))
            else:
                item[4], item[5] = item[1], rnd.randint(1, 50)
        bad = rnd.choice(items)
        field = rnd.randrange(1, len(bad))
        if isinstance(bad[field], str):
            bad[field] = rnd.choice(("d" * 31 + " ", "-" + "b" * 31, "tab\there", ""))
        else:
            bad[field] = rnd.choice(EDGES)
    data = message(items)
    fast = outcome(codec.decode_delta, data)
    assert fast == outcome(plain_decode, data)
    assert fast == outcome(lambda d: codec.decode_delta_claims(d)[0], data)


def fits_the_pattern(item: list) -> bool:
    """Ids of 32 bytes, an account under 24, integers under 2^64 (no bignum)."""
    ids = (item[1],) if item[0] == 0 else (item[1], item[4])
    return (all(len(x.encode()) == 32 for x in ids)
            and (item[0] == 1 or len(item[8].encode()) < 24)
            and all(x < 2**64 for x in item if isinstance(x, int)))


@settings(max_examples=50, deadline=None)
@given(EVENTS)
def test_the_proof_holds_for_an_array_of_plain_events_only(items):
    assert scan_proving(message(items)) == all(map(fits_the_pattern, items))


def test_no_proof_with_a_second_long_array_or_a_short_one():
    items = [[0, "a" * 32, seq, seq, 0, 0, 5, 5, ""] for seq in range(1, 31)]
    assert scan_proving(message(items))
    assert not scan_proving(message(items, extra=list(range(30))))
    assert not scan_proving(message(items, extra=items))
    assert not scan_proving(message(items[:23]))
    data = message(items, extra=[1.5] * 30)  # its own long array, not of events
    assert outcome(codec.decode_delta, data) == outcome(plain_decode, data)
    assert outcome(codec.decode_delta, data)[0] == "delta"
    # Events the pattern does not take (a float seq, a true side) beside a long
    # array that it does: no proof, so refused as the plain way refuses them.
    for field, odd in ((2, 1.5), (4, True), (3, 2.0**40)):
        forged = [list(item) for item in items]
        forged[7][field] = odd
        data = message(forged, extra=items)
        assert not scan_proving(data)
        assert outcome(codec.decode_delta, data) == outcome(plain_decode, data)
        assert outcome(codec.decode_delta, data)[0] == "refused"


def test_every_field_at_every_edge_decodes_as_the_plain_way():
    """One field of one order or cancel of a valid proven delta set to each edge
    in turn (every one the pattern still takes): the same delta or refusal."""
    def valid() -> list:
        items = []
        for seq in range(1, 31):
            if seq % 5 == 0:
                items.append([1, "a" * 32, seq, 10 * seq, "a" * 32, seq - 1])
            else:
                items.append([0, "a" * 32, seq, 10 * seq, seq % 2, (0, 2, 3, 4)[seq % 4],
                              7 * 10**8, 3 * 10**8, "desk-1"])
        items[3][5], items[3][6] = 1, 0  # a market order (price 0)
        return items

    assert outcome(codec.decode_delta, message(valid()))[0] == "delta"

    strings = ("a" * 32, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz", "d" * 31 + " ", "-" + "b" * 31,
               "tab\there", "", "x" * 23)
    checked = 0
    for index in (3, 4, 5, 29):  # a market order, two limit orders, a cancel
        for field in range(1, len(valid()[index])):
            for value in (*EDGES, *strings):
                items = valid()
                if isinstance(items[index][field], str) != isinstance(value, str):
                    continue
                items[index][field] = value
                data = message(items)
                if not scan_proving(data):
                    continue
                assert outcome(codec.decode_delta, data) == outcome(plain_decode, data), \
                    (index, field, value)
                checked += 1
    assert checked > 150


def plain_block(item: list, where: str = "block 0") -> tuple:
    """A block's events the plain way (``events_from_wire`` on its body, then the
    replica and seq check), as feedwire.block_from_wire decoded every body before
    it took the scan's proof: the events, or the refusal's words. (The fields
    before the body are always valid here.)"""
    replica, first, body, _ = item
    try:
        events = codec.events_from_wire(
            codec._list(codec.loads(body, f"{where} body"), f"{where} body",
                        codec.MAX_EVENTS), f"{where} event")
    except codec.CodecError as exc:
        return ("refused", str(exc))
    for i, event in enumerate(events):
        if event.replica != replica or event.seq != first + i:
            return ("refused", f"{where} event {i} must be {replica}:{first + i}, "
                               f"got {event.replica}:{event.seq}")
    return ("block", events)


def proven_block(item: list, where: str = "block 0") -> tuple:
    from crdtbook.feedwire import block_from_wire

    try:
        block = block_from_wire(item, where)
    except codec.CodecError as exc:
        return ("refused", str(exc))
    assert (block.replica, block.first, block.last, block.body, block.sig) == \
        (item[0], item[1], item[1] + len(block.events) - 1, item[2], item[3])
    return ("block", list(block.events))


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.randoms(use_true_random=False))
def test_a_blocks_proven_body_decodes_as_the_plain_way(items, rnd):
    """A block's body of 24 events or more that the scan proves is decoded without
    type tests, its replica and seqs checked in the same loop (``_proven_block``;
    anything irregular goes the plain way): the same events, or the same refusal
    in the same words, as ``events_from_wire``'s way and the block's check after it."""
    replica = rnd.choice(VALID_IDS)
    first = rnd.choice((1, 2, 40, MAX_SEQ - 100))
    if rnd.random() < 0.8:  # a block as a member seals it, but for one field at an edge
        for i, item in enumerate(items):
            item[1], item[2] = replica, first + i
            item[3] = rnd.randint(1, 2**62)
            if item[0] == 0:
                item[4], item[5] = rnd.randint(0, 1), rnd.choice((0, 0, 2, 3, 4))
                item[6] = 0 if item[5] == 1 else rnd.randint(1, 10**9)
                item[7] = rnd.randint(1, 10**9)
                item[8] = rnd.choice(("", "desk-1"))
            else:
                item[4], item[5] = item[1], rnd.randint(1, 50)
        if rnd.random() < 0.8:
            bad = rnd.choice(items)
            field = rnd.randrange(1, len(bad))
            if isinstance(bad[field], str):
                bad[field] = rnd.choice(("d" * 31 + " ", "-" + "b" * 31, "tab\there", "",
                                         VALID_IDS[0] if replica != VALID_IDS[0] else "e" * 32))
            else:
                bad[field] = rnd.choice(EDGES)
    item = [replica, first, cbor2.dumps(items, canonical=True), b"s" * 64]
    fast = proven_block(item)
    assert fast == plain_block(item)
    if len(items) >= 24 and all(fits_the_pattern(i) and (i[0] == 1 or max(i[4], i[5]) < 24)
                                for i in items):
        assert scan_proving(item[2])  # the proven way was the one taken


def test_every_field_of_a_block_at_every_edge_decodes_as_the_plain_way():
    """One field of one event of a valid proven block set to each edge in turn
    (every one the pattern still takes), with the block's first seq at 1 and
    where its last seq is MAX_SEQ: the same block or refusal as the plain way."""
    replica = "a" * 32

    def valid(first: int) -> list:
        items = []
        for seq in range(first, first + 30):
            if seq % 5 == 0:
                items.append([1, replica, seq, 10 + seq % 1000, replica, 1])
            else:
                items.append([0, replica, seq, 10 + seq % 1000, seq % 2, (0, 2, 3, 4)[seq % 4],
                              7 * 10**8, 3 * 10**8, "desk-1"])
        for seq, item in enumerate(items):  # clocks rising along the block
            item[3] = 10 + seq
        items[3][5], items[3][6] = 1, 0  # a market order (price 0)
        return items

    strings = (replica, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz", "d" * 31 + " ", "-" + "b" * 31,
               "tab\there", "", "x" * 23)
    checked = taken = 0
    for first in (1, MAX_SEQ - 29):
        good = [replica, first, cbor2.dumps(valid(first), canonical=True), b"s" * 64]
        assert proven_block(good)[0] == "block" and scan_proving(good[2])
        for index in (3, 4, 5, 29):  # a market order, two limit orders, a cancel
            for field in range(1, len(valid(first)[index])):
                for value in (*EDGES, *strings):
                    items = valid(first)
                    if isinstance(items[index][field], str) != isinstance(value, str):
                        continue
                    items[index][field] = value
                    item = [replica, first, cbor2.dumps(items, canonical=True), b"s" * 64]
                    if not scan_proving(item[2]):
                        continue
                    fast = proven_block(item)
                    assert fast == plain_block(item), (first, index, field, value)
                    checked += 1
                    taken += fast[0] == "block"
    assert checked > 300 and taken > 20
