"""A delta's events built from the scan's matches (plain.py) against the careful way.

For any bytes, ``decode_delta`` and ``decode_delta_claims`` must return what
the usual decode (cbor2, then codec.events_from_wire) returns, equal tuple
for tuple with strings shared alike, or refuse with the same words. Deltas
here hold orders and cancels of every integer width, accounts of 0..30
bytes (unicode too), market orders, membership events, odd entries, values
out of range, and the same bytes damaged.
"""

from __future__ import annotations

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook import codec
from crdtbook.codec import CodecError, decode_delta, decode_delta_claims

IDS = st.sampled_from(["a" * 32, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz", "alpha", "b" * 31,
                       "c" * 40, "-" + "d" * 31, "é" * 16, "e" * 32])
WIDE = st.one_of(st.integers(0, 30), st.integers(0, 2**8), st.integers(0, 2**16),
                 st.integers(0, 2**32), st.integers(0, 2**64 - 1))
SEQ = st.one_of(st.integers(1, 30), WIDE)
ACCOUNT = st.one_of(st.just(""), st.sampled_from(["x", "a" * 23, "b" * 24, "ü" * 11, "\x00"]),
                    st.text(max_size=30))
ORDER = st.tuples(st.just(0), IDS, SEQ, SEQ, st.integers(0, 2), st.integers(0, 5),
                  st.one_of(st.just(0), WIDE), WIDE, ACCOUNT).map(list)
CANCEL = st.tuples(st.just(1), IDS, SEQ, SEQ, IDS, SEQ).map(list)
MEMBER = st.tuples(st.just(2), IDS, SEQ, SEQ, st.integers(0, 2), IDS, SEQ,
                   st.binary(max_size=32)).map(list)
ODD = st.one_of(st.none(), st.integers(-5, 5), st.lists(st.integers(0, 3), max_size=3))
EVENTS = st.lists(st.one_of(ORDER, ORDER, ORDER, CANCEL, CANCEL, MEMBER, ODD), max_size=40)


def careful(data: bytes, claims: bool) -> tuple:
    """The usual way: cbor2 decodes everything, events_from_wire checks each event."""
    try:
        message = codec._loads(data, "delta")
        got = codec.claims_from_wire(message.get("claims", [])) if claims else None
        return ("ok", codec._delta_from_message(message), got)
    except CodecError as exc:
        return ("refused", str(exc))
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        return ("refused", f"malformed message ({type(exc).__name__}: {exc})"[:300])


def fast(data: bytes, claims: bool) -> tuple:
    try:
        if claims:
            return ("ok", *decode_delta_claims(data))
        return ("ok", decode_delta(data), None)
    except CodecError as exc:
        return ("refused", str(exc))


def shape(outcome: tuple) -> tuple:
    if outcome[0] != "ok":
        return outcome
    _, delta, claims = outcome
    events = sorted(value for _, _, value in delta.entries())
    # one string object per distinct value, as the usual way shares them
    shared = sorted({(type(s).__name__, s, len({id(x) for e in events for x in e if x == s}))
                     for e in events for s in e if type(s) is str})
    return ("ok", events, [[type(x) for x in e] for e in events], shared,
            delta.context.vv, {r: sorted(c) for r, c in delta.context.cloud.items()}, claims)


def same(data: bytes, claims: bool = False) -> tuple:
    want, got = shape(careful(data, claims)), shape(fast(data, claims))
    assert got == want, data.hex()
    return got


def delta_bytes(events: list, covered: bool, claims: list | None = None) -> bytes:
    tops: dict = {}
    for event in events:
        if type(event) is list and len(event) > 2 and type(event[1]) is str \
                and type(event[2]) is int:
            tops[event[1]] = max(tops.get(event[1], 0), event[2])
    context = [[r, min(s, 2**63 - 1) if covered else 0, []] for r, s in sorted(tops.items())]
    message = {"v": 1, "kind": "delta", "events": events, "context": context}
    if claims is not None:
        message["claims"] = claims
    return cbor2.dumps(message, canonical=True)


def plain_orders(n: int, replica: str = "a" * 32) -> list:
    return [[0, replica, i + 1, 1000 + i, i % 2, 0, 100 + i, 5 * i + 1, "acct"] for i in range(n)]


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.booleans(), st.booleans())
def test_random_deltas_decode_alike(events, covered, claims):
    same(delta_bytes(events, covered, [["a" * 32, 1, 2]] if claims else None), claims)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(ORDER, CANCEL), max_size=30), st.data())
def test_damaged_deltas_decode_alike(events, data):
    raw = bytearray(delta_bytes(plain_orders(20) + events, True))
    how = data.draw(st.sampled_from(["cut", "byte", "tag", "insert", "none"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if how == "cut":
        raw = raw[:at]
    elif how == "byte":
        raw[at] = data.draw(st.integers(0, 255))
    elif how == "tag":
        raw[at:at] = b"\xc6"
    elif how == "insert":
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    same(bytes(raw), data.draw(st.booleans()))


def test_plain_deltas_take_the_fast_way_and_build_the_same_events():
    events = plain_orders(50) + [[1, "a" * 32, 51, 2000, "a" * 32, 3]]
    data = delta_bytes(events, True)
    runs: list = []
    codec.scan(data, runs_out=runs)
    assert len(runs) == 1 and len(runs[0][2]) == 51  # the matches the fast way reads
    kind, events_built, *_ = same(data)
    assert kind == "ok" and len(events_built) == 51


def test_a_stand_in_tag_elsewhere_or_a_second_events_key_is_no_shortcut():
    events = plain_orders(30)
    # "events" twice: cbor2 keeps the last; the fast way must not keep the first
    body = cbor2.dumps(events, canonical=True)
    data = (b"\xa5" + cbor2.dumps("v") + b"\x01" + cbor2.dumps("kind") + cbor2.dumps("delta")
            + cbor2.dumps("events") + body + cbor2.dumps("context")
            + cbor2.dumps([["a" * 32, 30, []]]) + cbor2.dumps("events") + cbor2.dumps([]))
    assert same(data)[0] == "ok"
    assert len(decode_delta(data).store) == 0
    # the long array under another key: events are those of "events"
    data = (b"\xa4" + cbor2.dumps("v") + b"\x01" + cbor2.dumps("kind") + cbor2.dumps("delta")
            + cbor2.dumps("events") + cbor2.dumps([]) + cbor2.dumps("other") + body)
    assert same(data)[0] == "refused"  # no context


def test_out_of_range_and_bad_strings_refuse_alike():
    for bad in ([0, "a" * 32, 0, 5, 0, 0, 1, 1, "x"],  # seq 0
                [0, "a" * 32, 1, 5, 0, 1, 7, 1, "x"],  # a market order with a price
                [0, "a" * 32, 1, 5, 0, 0, 1, 0, "x"],  # qty 0
                [0, "a" * 32, 1, 5, 2, 0, 1, 1, "x"],  # side 2
                [0, "a" * 32, 1, 5, 0, 0, 1, 1, "\x07"],  # an unprintable account
                [0, "-" + "a" * 31, 1, 5, 0, 0, 1, 1, "x"],  # a bad replica id
                [1, "a" * 32, 1, 5, "b" * 32, 0]):  # a cancel of seq 0
        out = same(delta_bytes(plain_orders(5, "b" * 32) + [bad], True))
        assert out[0] == "refused", bad
    # text that is not UTF-8 in an id the pattern matched
    data = bytearray(delta_bytes(plain_orders(5), True))
    at = data.index(b"\x78\x20") + 2
    data[at] = 0xFF
    assert same(bytes(data))[0] == "refused"


ID32 = st.sampled_from(["a" * 32, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz", "-" + "d" * 31, "é" * 16])
PLAIN = st.one_of(
    st.tuples(st.just(0), ID32, SEQ, SEQ, st.integers(0, 2), st.integers(0, 5),
              st.one_of(st.just(0), WIDE), WIDE,
              st.one_of(st.just(""), st.text(max_size=5), st.sampled_from(["a" * 23, "ü" * 11]))
              ).map(list),
    st.tuples(st.just(1), ID32, SEQ, SEQ, ID32, SEQ).map(list))


@settings(max_examples=300, deadline=None)
@given(st.lists(PLAIN, min_size=24, max_size=60), st.booleans())
def test_deltas_the_pattern_matches_decode_alike(events, covered):
    """Every entry matches the scan's pattern (a long array: 24 or more): the fast way
    is tried on each."""
    data = delta_bytes(events, covered)
    runs: list = []
    codec.scan(data, runs_out=runs)
    assert [len(run[2]) for run in runs] == [len(events)]
    same(data)


GOOD_ID = st.sampled_from(["a" * 32, "vf3fs4ki6xjhhjix2auvgs2rnlndr3lz"])
POSITIVE = st.one_of(st.integers(1, 23), st.integers(24, 2**8 - 1), st.integers(2**8, 2**16 - 1),
                     st.integers(2**16, 2**32 - 1), st.integers(2**32, 2**63 - 1))


@st.composite
def valid_plain_events(draw) -> list:
    """Orders and cancels that decode: distinct seqs per replica, every width."""
    n = draw(st.integers(24, 60))
    seqs = draw(st.lists(POSITIVE, min_size=n, max_size=n, unique=True))
    events = []
    for seq in seqs:
        replica = draw(GOOD_ID)
        clock = draw(POSITIVE)
        if draw(st.integers(0, 4)) == 0:
            events.append([1, replica, seq, clock, draw(GOOD_ID), draw(POSITIVE)])
            continue
        kind = draw(st.integers(0, 4))
        price = 0 if kind == 1 else draw(st.integers(1, 10**20) | POSITIVE)
        qty = draw(st.integers(1, 10**20) | POSITIVE)
        account = draw(st.just("") | st.text("abXY09 ü€😀", max_size=5)
                       | st.sampled_from(["a" * 23, "ü" * 11]))
        events.append([0, replica, seq, clock, draw(st.integers(0, 1)), kind, price, qty,
                       account])
    return events


@settings(max_examples=200, deadline=None)
@given(valid_plain_events())
def test_valid_plain_deltas_decode_alike(events):
    data = delta_bytes(events, True)
    out = same(data)
    assert out[0] == "ok" and len(out[1]) == len(events)
