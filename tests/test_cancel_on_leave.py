"""Cancel on leave and evict: a valid leave or evict cancels its target's resting orders."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.amount import SCALE
from crdtbook.aworset import AWORSet
from crdtbook.codec import CodecError, decode_snapshot, encode_snapshot
from crdtbook.replica import Replica

from .helpers import assert_invariants, assert_matches_reference, observable


def _cluster(*names):
    """Replicas with the first as founder, every other joined and told everything."""
    replicas = [Replica(n) for n in names]
    founder = replicas[0]
    deltas = [founder.bootstrap(1)] + [founder.join(r.id, 2 + i)
                                        for i, r in enumerate(replicas[1:])]
    for replica in replicas[1:]:
        for delta in deltas:
            replica.merge(delta)
    return replicas, deltas


def _everyone(replicas, delta):
    for replica in replicas:
        replica.merge(delta)  # a replica's own delta is a duplicate there: no change


def test_leave_cancels_resting_orders_at_its_position():
    (a, b), _ = _cluster("a", "b")
    sell = b.place("sell", "5", "10", now_ms=10)
    _everyone([a], sell.delta)
    other = b.place("buy", "1", "8", now_ms=11)
    _everyone([a], other.delta)
    buy = a.place("buy", "2", "10", now_ms=12)  # fills before the leave stand
    _everyone([b], buy.delta)
    _everyone([a], b.leave(now_ms=13))
    for replica in (a, b):
        view = replica.order(sell.order.dot)
        assert (view.status, view.filled, view.resting, view.cancelled, view.reason) == \
            ("cancelled", 2 * SCALE, 0, 3 * SCALE, "owner left")
        view = replica.order(other.order.dot)
        assert (view.status, view.cancelled, view.reason) == ("cancelled", SCALE, "owner left")
        assert replica.book().bids == [] and replica.book().asks == []
    late = a.place("buy", "1", "10", now_ms=14)  # nothing of b left to trade against
    assert late.fills == [] and late.order.status == "open"
    _everyone([b], late.delta)
    assert observable(a) == observable(b)
    for replica in (a, b):
        assert_matches_reference(replica)
        assert_invariants(replica)


def test_evict_cancels_with_its_own_reason_and_spares_others():
    (a, b, c), _ = _cluster("a", "b", "c")
    mine = a.place("sell", "2", "11", now_ms=10)
    theirs = b.place("sell", "4", "10", now_ms=11)
    filled = b.place("sell", "1", "9", now_ms=12)
    for delta in (mine.delta, theirs.delta, filled.delta):
        _everyone([a, b, c], delta)
    taker = c.place("buy", "1", "9", now_ms=13)
    _everyone([a, b], taker.delta)
    evict = a.evict("b", now_ms=20)
    _everyone([b, c], evict)
    for replica in (a, b, c):
        view = replica.order(theirs.order.dot)
        assert (view.status, view.cancelled, view.reason) == \
            ("cancelled", 4 * SCALE, "owner evicted")
        assert replica.order(filled.order.dot).status == "filled"
        assert replica.order(filled.order.dot).reason is None
        assert replica.order(mine.order.dot).status == "open"
        assert [(p // SCALE, q // SCALE, n) for p, q, n in replica.book().asks] == [(11, 2, 1)]
        assert_matches_reference(replica)
    assert observable(a) == observable(b) == observable(c)


def test_a_rejected_leave_cancels_nothing():
    (a, b), _ = _cluster("a", "b")
    sell = b.place("sell", "5", "10", now_ms=10)
    _everyone([a], sell.delta)
    # An evict of itself is invalid: nothing is cancelled.
    forged = b._member_event("evict", "b", 1, 11)
    b._merge_one(forged)
    a.merge(AWORSet.from_entries([("b", forged.seq, forged)]))
    for replica in (a, b):
        assert replica.order(sell.order.dot).status == "open"
        assert_matches_reference(replica)


def test_a_late_fill_before_the_leave_rewinds_and_reduces_what_it_cancels():
    (a, b), genesis = _cluster("a", "b")
    sell = b.place("sell", "5", "10", now_ms=10)
    a.merge(sell.delta)
    buy = a.place("buy", "2", "10", now_ms=20)  # b does not see it before leaving
    leave = b.leave(now_ms=30)
    x = Replica("x")
    for delta in genesis + [sell.delta, leave]:
        x.merge(delta)
    view = x.order(sell.order.dot)
    assert (view.filled, view.cancelled, view.reason) == (0, 5 * SCALE, "owner left")
    x.merge(buy.delta)  # sorts before the leave: the engine rewinds
    view = x.order(sell.order.dot)
    assert (view.status, view.filled, view.cancelled, view.reason) == \
        ("cancelled", 2 * SCALE, 3 * SCALE, "owner left")
    assert x.order(buy.order.dot).status == "filled"
    assert x.book().bids == [] and x.book().asks == []
    assert x.engine.replayed > 0
    assert_matches_reference(x)
    assert_invariants(x)
    # the other way round: the late event undoes the leave's cancel, then redoes it
    y = Replica("y")
    for delta in genesis + [sell.delta, buy.delta, leave]:
        y.merge(delta)
    assert observable(x)[1:] == observable(y)[1:]


def test_undo_restores_the_level_order_exactly():
    """A leave removes orders from the middle of a level; a late taker that sorts
    before it rewinds it, and must find the level in its original time priority."""
    (a, b), genesis = _cluster("a", "b")
    deltas = list(genesis)
    deltas.append(a.place("sell", "1", "10", now_ms=10).delta)
    b.merge(deltas[-1])
    deltas.append(b.place("sell", "1", "10", now_ms=11).delta)
    deltas.append(b.place("sell", "1", "10", now_ms=12).delta)
    a.merge(deltas[-2])
    a.merge(deltas[-1])
    deltas.append(a.place("sell", "1", "10", now_ms=13).delta)
    late = a.place("buy", "2", "10", now_ms=14)  # takes a's first, then b's first
    deltas.append(b.leave(now_ms=15))
    x = Replica("x")
    for delta in deltas:
        x.merge(delta)
    assert [(p // SCALE, q // SCALE, n) for p, q, n in x.book().asks] == [(10, 2, 2)]
    x.merge(late.delta)  # sorts before the leave
    assert [(str(f.maker), f.qty // SCALE) for f in x.fills()] == [("a:3", 1), ("b:1", 1)]
    assert x.order("b:1").status == "filled" and x.order("b:2").reason == "owner left"
    assert [(p // SCALE, q // SCALE, n) for p, q, n in x.book().asks] == [(10, 1, 1)]
    assert_matches_reference(x)
    engine = x.engine
    window = engine._rewind(0)  # undo everything: an empty book
    assert engine.bids.depth() == [] and engine.asks.depth() == [] and not engine.fills
    for event in window:
        engine.apply(event)
    assert_matches_reference(x)


def _scenario():
    """Deltas of a small run with a leave and an evict and resting orders at both."""
    (a, b, c), genesis = _cluster("a", "b", "c")
    deltas = list(genesis)
    now = 10

    def send(author, delta, to):
        deltas.append(delta)
        for replica in to:
            replica.merge(delta)

    for who, side, qty, price in [
        (b, "sell", "3", "10"), (c, "sell", "2", "11"), (a, "buy", "1", "9"),
        (b, "buy", "2", "8"), (c, "buy", "4", "9"), (a, "sell", "1", "12"),
    ]:
        now += 1
        send(who, who.place(side, qty, price, now_ms=now).delta, [a, b, c])
    now += 1
    send(a, a.place("buy", "2", "10", now_ms=now).delta, [c])  # b misses it for now
    now += 1
    send(b, b.leave(now_ms=now), [a])  # c misses it for now
    now += 1
    send(c, c.place("buy", "2", "10", now_ms=now).delta, [a])
    now += 1
    send(a, a.evict("c", now_ms=now), [])
    now += 1
    send(a, a.place("sell", "9", "8", now_ms=now).delta, [])
    return deltas


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_leave_and_evict_converge_across_delivery_orders(data):
    deltas = _scenario()
    reference = Replica("ref")
    for delta in deltas:
        reference.merge(delta)
    reasons = {o.reason for o in reference.orders() if o.status == "cancelled"}
    assert {"owner left", "owner evicted"} <= reasons
    assert_matches_reference(reference)
    other = Replica("other")
    order = data.draw(st.permutations(range(len(deltas))))
    batch = data.draw(st.integers(1, 4))
    for start in range(0, len(order), batch):
        combined = AWORSet()
        for i in order[start:start + batch]:
            combined.merge(deltas[i])
        other.merge(combined)
        assert_invariants(other)
    assert observable(other)[1:] == observable(reference)[1:]
    assert_matches_reference(other)


def test_snapshot_carries_the_cancel_reason():
    (a, b, c), genesis = _cluster("a", "b", "c")  # c never acknowledges: a keeps outcomes
    sell = b.place("sell", "5", "10", now_ms=10)
    a.merge(sell.delta)
    a.merge(b.leave(now_ms=11))
    a.claim(100)
    a.observe_claims([c.claim(100)])  # c has not acknowledged anything (no pull)
    a.compact()
    assert a.engine.floor > sell.order.clock and not a.engine.log  # all below the cut
    assert any(o.event.dot == sell.order.dot
               for o in a.engine.retained)  # kept (c may still need it)
    snap = a.snapshot_state()
    data = encode_snapshot(snap)
    back, _ = decode_snapshot(data)
    assert back == snap
    fresh = Replica("d")
    fresh.install(back)
    view = fresh.order(sell.order.dot)
    assert view == a.order(sell.order.dot)
    assert (view.status, view.reason) == ("cancelled", "owner left")
    assert observable(fresh)[1:] == observable(a)[1:]
    # strict: a cancel reason only on an order with nothing resting
    message = cbor2.loads(data)
    base = message["base"]
    entry = next(e for e in base if e[0] == "b" and e[1] == sell.order.dot.seq)
    entry[2] = 1
    with pytest.raises(CodecError, match="leave or evict"):
        decode_snapshot(cbor2.dumps(message, canonical=True))
    entry[2] = 0
    member = next(e for e in base if e[0] == "a")  # the founder's join
    member[4] = entry[4]
    with pytest.raises(CodecError, match="only an order"):
        decode_snapshot(cbor2.dumps(message, canonical=True))
