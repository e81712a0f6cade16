"""cborscan's fast way through a long array of events against its plain walk.

The pattern must change nothing but speed: for any bytes, with any caps, the
fast scan returns the same item count or refuses with the same words as the
plain walk of every item. Messages here are event arrays as nodes write them
(ids of 32 characters), others (short ids, accounts, membership events), and
those bytes damaged: cut, a byte changed, a tag or a nested array let in.
"""

from __future__ import annotations

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook import cborscan
from crdtbook.cborscan import ScanError, scan

IDS = st.sampled_from(["a" * 32, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz", "alpha", "b" * 31, "c" * 40])
UINT = st.one_of(st.integers(0, 30), st.integers(0, 2**16), st.integers(0, 2**63 - 1))
ORDER = st.tuples(st.just(0), IDS, UINT, UINT, st.integers(0, 1), st.integers(0, 4), UINT, UINT,
                  st.one_of(st.just(""), st.text(max_size=30))).map(list)
CANCEL = st.tuples(st.just(1), IDS, UINT, UINT, IDS, UINT).map(list)
MEMBER = st.tuples(st.just(2), IDS, UINT, UINT, st.integers(0, 2), IDS, UINT,
                   st.binary(max_size=32)).map(list)
ODD = st.one_of(st.none(), st.integers(-5, 5), st.lists(st.integers(0, 3), max_size=3),
                st.floats(allow_nan=False))
EVENTS = st.lists(st.one_of(ORDER, ORDER, ORDER, CANCEL, MEMBER, ODD), min_size=0, max_size=60)


def outcome(data: bytes, **caps) -> tuple:
    try:
        return ("items", scan(data, **caps))
    except ScanError as exc:
        return ("refused", str(exc))


def same(data: bytes, **caps) -> tuple:
    fast, plain = outcome(data, **caps), outcome(data, plain=True, **caps)
    assert fast == plain, (data.hex(), caps)
    return fast


@settings(max_examples=150)
@given(EVENTS, st.integers(0, 2))
def test_messages_of_events_scan_alike(events, wrap):
    message = {"v": 1, "kind": "delta", "events": events, "context": []}
    data = cbor2.dumps(message if wrap == 0 else events if wrap == 1 else [[events]],
                       canonical=True)
    assert same(data)[0] == "items"


@settings(max_examples=250)
@given(EVENTS, st.data())
def test_damaged_messages_scan_alike(events, data):
    raw = bytearray(cbor2.dumps({"events": events + [[0] * 9] * 30}, canonical=True))
    how = data.draw(st.sampled_from(["cut", "byte", "tag", "nest", "none"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if how == "cut":
        raw = raw[:at]
    elif how == "byte":
        raw[at] = data.draw(st.integers(0, 255))
    elif how == "tag":
        raw[at:at] = b"\xc1"
    elif how == "nest":
        raw[at:at] = b"\x81"
    same(bytes(raw))


@settings(max_examples=120)
@given(st.lists(st.one_of(ORDER, CANCEL), min_size=24, max_size=80), st.integers(1, 900),
       st.integers(1, 4))
def test_caps_are_met_at_the_same_item(events, max_items, max_depth):
    data = cbor2.dumps([[events]], canonical=True)
    same(data, max_items=max_items, max_depth=max_depth)


def test_the_fast_way_is_taken_and_counts_exactly():
    order = [0, "a" * 32, 7, 2**40, 1, 0, 10**9, 5 * 10**8, ""]
    cancel = [1, "a" * 32, 8, 2**40 + 1, "a" * 32, 7]
    data = cbor2.dumps([order, cancel] * 50, canonical=True)
    assert scan(data) == scan(data, plain=True) == 1 + 100 + 50 * 9 + 50 * 6
    # one item past the cap is refused, inside the run the pattern walks
    assert outcome(data, max_items=1 + 100 + 50 * 15 - 1) == (
        "refused", f"more than {1 + 100 + 50 * 15 - 1} items")


def test_the_fast_way_resumes_after_an_odd_entry(monkeypatch):
    walked = []
    events = cborscan._events

    def counted(data, pos, todo, items, max_items):
        out = events(data, pos, todo, items, max_items)
        walked.append(todo - out[1])
        return out

    monkeypatch.setattr(cborscan, "_events", counted)
    order = [0, "a" * 32, 7, 2**40, 1, 0, 10**9, 5 * 10**8, ""]
    join = [2, "a" * 32, 1, 2**40, 0, "b" * 32, 0, b"k" * 32]
    data = cbor2.dumps([join] + [order] * 40 + [join] + [order] * 40, canonical=True)
    count = 1 + 82 + 2 * 8 + 80 * 9
    assert scan(data) == scan(data, plain=True) == count
    assert walked == [0, 40, 40]  # stopped at each join, went on after it
    # a cap met in the second run of plain orders is met by the pattern's count
    assert outcome(data, max_items=count - 1) == outcome(data, max_items=count - 1, plain=True)


# Blocks of cborscan._BLOCK entries: ids of 32 bytes (so the pattern takes
# them), some holding a head's bytes (U+0089 U+0000 "x " is c2 89 00 78 20 in
# UTF-8: an order's head; U+0086 U+0001 "x " a cancel's), and integers whose
# bytes hold one, so that a block's heads do not add up to its entries.
HEADED_IDS = st.sampled_from(["a" * 32, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz",
                              "\u0089\u0000x " + "a" * 27, "b" * 27 + "\u0086\u0001x "])
HEADED_UINT = st.one_of(st.integers(0, 30), st.integers(0, 2**63 - 1),
                        st.sampled_from([0x89007820, 0x86017820, 0x89007820 << 32,
                                         0x1234_8601_7820_5678, 2**64 - 1]))
BLOCK_ORDER = st.tuples(st.just(0), HEADED_IDS, HEADED_UINT, HEADED_UINT, st.integers(0, 1),
                        st.integers(0, 4), HEADED_UINT, HEADED_UINT,
                        st.sampled_from(["", "desk-1", "\u0089\u0000x "])).map(list)
BLOCK_CANCEL = st.tuples(st.just(1), HEADED_IDS, HEADED_UINT, HEADED_UINT, HEADED_IDS,
                         HEADED_UINT).map(list)


@settings(max_examples=150)
@given(st.lists(st.one_of(BLOCK_ORDER, BLOCK_ORDER, BLOCK_CANCEL), min_size=24, max_size=140),
       st.lists(st.tuples(st.integers(0, 140), ODD), max_size=3), st.integers(1, 1500),
       st.booleans())
def test_blocks_of_entries_scan_alike(events, odd, max_items, capped):
    for at, entry in odd:  # odd entries anywhere, block boundaries included
        events.insert(min(at, len(events)), entry)
    data = cbor2.dumps({"events": events, "context": []}, canonical=True)
    assert same(data)[0] == "items"
    if capped:
        same(data, max_items=max_items)
    assert cborscan.scan_proving(data) == (not odd)


def test_blocks_are_taken_and_a_head_inside_a_field_is_counted_one_by_one(monkeypatch):
    blocks = []
    match = cborscan._BLOCK_MATCH

    def counted(data, pos):
        found = match(data, pos)
        blocks.append(found is not None)
        return found

    monkeypatch.setattr(cborscan, "_BLOCK_MATCH", counted)
    order = [0, "a" * 32, 7, 2**40, 1, 0, 10**9, 5 * 10**8, ""]
    cancel = [1, "a" * 32, 8, 2**40 + 1, "a" * 32, 7]
    size = cborscan._BLOCK
    plain = [order, cancel, order] * size  # three blocks, all plain
    data = cbor2.dumps(plain, canonical=True)
    assert scan(data) == scan(data, plain=True) == 1 + 3 * size + size * (9 + 6 + 9)
    assert blocks == [True, True, True]
    # an order whose price's bytes are an order's head: its block's heads add up
    # to one more than its entries, so that block is walked one entry at a time
    blocks.clear()
    headed = [*plain[:size + 1], [0, "a" * 32, 9, 2**40, 1, 0, 0x89007820, 5, ""],
              *plain[size + 2:]]
    data = cbor2.dumps(headed, canonical=True)
    assert scan(data) == scan(data, plain=True)
    assert blocks == [True, True]  # the first block, then the headed one (matched, not counted)
    assert outcome(data, max_items=scan(data) - 1) == outcome(
        data, max_items=scan(data) - 1, plain=True)
