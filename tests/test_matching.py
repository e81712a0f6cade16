"""Matching rules, one case at a time, through the Replica facade."""

import pytest

from crdtbook.amount import SCALE
from crdtbook.aworset import AWORSet
from crdtbook.events import make_cancel, make_order
from crdtbook.replica import Replica, ReplicaError


@pytest.fixture
def ex():
    return Exchange()


class Exchange:
    """Two replicas kept in sync, with a clock that advances by itself."""

    def __init__(self):
        self.a, self.b = Replica("a"), Replica("b")
        self.now = 1_000

    def place(self, side, qty, price=None, type="limit", at="a"):
        self.now += 1
        mine, other = (self.a, self.b) if at == "a" else (self.b, self.a)
        placed = mine.place(side, qty, price, type, now_ms=self.now)
        other.merge(placed.delta)
        return placed

    def book(self):
        book = self.a.book()
        assert book == self.b.book()
        return ([(p // SCALE, q // SCALE, n) for p, q, n in book.bids],
                [(p // SCALE, q // SCALE, n) for p, q, n in book.asks])

    def fills(self):
        assert self.a.fills() == self.b.fills()
        return [(str(f.taker), str(f.maker), f.price // SCALE, f.qty // SCALE)
                for f in self.a.fills()]


def test_limit_trades_at_maker_price_and_rests_remainder(ex):
    ex.place("sell", "3", "12")
    placed = ex.place("buy", "5", "13", at="b")
    assert [(f.price // SCALE, f.qty // SCALE) for f in placed.fills] == [(12, 3)]
    assert ex.book() == ([(13, 2, 1)], [])
    assert placed.order.status == "open" and placed.order.filled == 3 * SCALE


def test_price_then_time_priority(ex):
    ex.place("sell", "1", "12")  # a:1
    ex.place("sell", "1", "11", at="b")  # b:1 better price
    ex.place("sell", "1", "11")  # a:2 same price, later
    ex.place("buy", "3", "12", at="b")  # b:2
    assert ex.fills() == [("b:2", "b:1", 11, 1), ("b:2", "a:2", 11, 1), ("b:2", "a:1", 12, 1)]
    assert ex.book() == ([], [])


def test_limit_does_not_trade_through_its_price(ex):
    ex.place("sell", "1", "12")
    ex.place("buy", "1", "11")
    assert ex.fills() == []
    assert ex.book() == ([(11, 1, 1)], [(12, 1, 1)])


def test_market_sweeps_and_drops_remainder(ex):
    ex.place("sell", "1", "10")
    ex.place("sell", "1", "20")
    placed = ex.place("buy", "5", type="market", at="b")
    assert [f.price // SCALE for f in placed.fills] == [10, 20]
    assert placed.order.status == "cancelled" and placed.order.cancelled == 3 * SCALE
    assert ex.book() == ([], [])


def test_ioc_drops_remainder(ex):
    ex.place("buy", "2", "10")
    placed = ex.place("sell", "5", "9", type="ioc", at="b")
    assert placed.order.filled == 2 * SCALE and placed.order.resting == 0
    assert ex.book() == ([], [])


def test_fok_all_or_nothing(ex):
    ex.place("sell", "2", "10")
    ex.place("sell", "2", "11")
    rejected = ex.place("buy", "5", "11", type="fok", at="b")
    assert rejected.order.status == "rejected" and rejected.fills == []
    too_far = ex.place("buy", "4", "10", type="fok", at="b")
    assert too_far.order.status == "rejected"
    done = ex.place("buy", "4", "11", type="fok", at="b")
    assert done.order.status == "filled" and len(done.fills) == 2
    assert ex.place("buy", "1", "11", type="fok").order.status == "rejected"  # empty book


def test_post_only_rejected_if_it_would_trade(ex):
    ex.place("sell", "1", "10")
    assert ex.place("buy", "1", "10", type="post_only").order.status == "rejected"
    rests = ex.place("buy", "1", "9", type="post_only")
    assert rests.order.status == "open"
    assert ex.book() == ([(9, 1, 1)], [(10, 1, 1)])


def test_cancel_removes_remainder_fills_before_stand(ex):
    ex.place("sell", "5", "10")  # a:1
    ex.place("buy", "2", "10", at="b")
    cancelled = ex.a.cancel("a:1", now_ms=ex.now + 1)
    ex.b.merge(cancelled.delta)
    assert cancelled.cancel.status == "cancelled" and cancelled.cancel.removed == 3 * SCALE
    order = ex.b.order("a:1")
    assert (order.status, order.filled, order.cancelled) == ("cancelled", 2 * SCALE, 3 * SCALE)
    assert ex.fills() == [("b:1", "a:1", 10, 2)]
    again = ex.a.cancel("a:1", now_ms=ex.now + 2)
    assert again.cancel.status == "noop"


def test_cancel_refused_locally_for_foreign_or_unknown(ex):
    ex.place("sell", "1", "10", at="b")
    with pytest.raises(ReplicaError, match="placed at replica b"):
        ex.a.cancel("b:1")
    with pytest.raises(ReplicaError, match="unknown order"):
        ex.a.cancel("a:7")
    with pytest.raises(ReplicaError, match="replica:seq"):
        ex.a.cancel("nonsense")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("hold", "1", "1"), "side must be"),
        (("buy", "1", "1", "stop"), "type must be"),
        (("buy", "0", "1"), "must be positive"),
        (("buy", "1", None), "needs a price"),
        (("buy", "1", "1", "market"), "takes no price"),
        (("buy", "1.123456789", "1"), "fractional digits"),
        (("buy", 1, "1"), "decimal string"),
    ],
)
def test_place_rejects_bad_fields_and_changes_nothing(args, message):
    replica = Replica("a")
    before = replica.digest()
    with pytest.raises(ReplicaError, match=message):
        replica.place(*args)
    assert replica.digest() == before and replica.event_count() == 0


def _inject(replica, event):
    replica.merge(AWORSet.from_entries([(event.replica, event.seq, event)]))


def test_forged_cancel_of_another_replicas_order_is_rejected_everywhere(ex):
    ex.place("sell", "1", "10", at="b")  # b:1
    forged = make_cancel(ex.a.clock.tick(ex.now + 5), "a", 1, "b", 1)
    ex.a._merge_one(forged)  # a buggy node "a" mints it and ships it
    _inject(ex.b, forged)
    for replica in (ex.a, ex.b):
        view = replica.cancel_view("a:1")
        assert view.status == "rejected" and "its own orders" in view.reason
    assert ex.book() == ([], [(10, 1, 1)])


def test_clock_going_backwards_rejects_the_rest_of_that_replica(ex):
    first = make_order(10 << 16, "z", 1, "sell", "limit", 10 * SCALE, SCALE, "")
    stale = make_order(10 << 16, "z", 2, "sell", "limit", 11 * SCALE, SCALE, "")
    after = make_order(20 << 16, "z", 3, "sell", "limit", 12 * SCALE, SCALE, "")
    for replica in (ex.a, ex.b):
        for event in (after, stale, first) if replica is ex.a else (first, stale, after):
            _inject(replica, event)
        assert replica.order("z:1").status == "open"
        assert replica.order("z:2").status == "rejected"
        assert replica.order("z:3").status == "rejected"
    assert ex.a.digest() == ex.b.digest()
    assert ex.book() == ([], [(10, 1, 1)])


def test_event_behind_a_gap_waits(ex):
    one = make_order(10 << 16, "z", 1, "sell", "limit", 10 * SCALE, SCALE, "")
    two = make_order(11 << 16, "z", 2, "buy", "limit", 10 * SCALE, SCALE, "")
    _inject(ex.a, two)
    assert ex.a.order("z:2").status == "pending" and ex.a.book().bids == []
    _inject(ex.a, one)
    assert ex.a.order("z:2").status == "filled"


def test_late_event_rewinds_and_takes_priority():
    late = Replica("late")
    a, b = Replica("a"), Replica("b")
    early = a.place("sell", "1", "10", now_ms=100)  # position earlier
    second = b.place("sell", "1", "10", now_ms=200)
    taker = b.place("buy", "1", "10", now_ms=300)
    late.merge(second.delta)
    late.merge(taker.delta)
    assert [str(f.maker) for f in late.fills()] == ["b:1"]
    late.merge(early.delta)  # arrives last but sorts first: it is the maker now
    assert [str(f.maker) for f in late.fills()] == ["a:1"]
    assert late.order("b:1").status == "open"


def test_refuses_events_under_its_own_id_it_never_made(ex):
    ex.place("sell", "1", "10")  # a:1 is real
    forged = make_order(ex.now << 16, "a", 2, "buy", "limit", 10 * SCALE, SCALE, "")
    before = ex.a.digest()
    with pytest.raises(ReplicaError, match="own id"):
        _inject(ex.a, forged)
    assert ex.a.digest() == before
    assert ex.a.place("sell", "1", "11", now_ms=ex.now + 9).order.dot == ("a", 2)


def test_refuses_altered_copies_of_its_own_events(ex):
    placed = ex.place("sell", "1", "10")  # a:1
    real = placed.delta.get("a", 1)
    forged = real._replace(price=real.price - 1)  # compares smaller: would win a min-join
    with pytest.raises(ReplicaError, match="own id"):
        _inject(ex.a, forged)
    assert ex.a.order("a:1").price == real.price


def test_exhausted_clock_is_a_clear_error_not_a_crash():
    from crdtbook.clock import MAX_CLOCK

    a = Replica("a")
    a.place("sell", "1", "10", now_ms=1)
    b = Replica("b")
    b.merge(AWORSet.from_entries(
        [("z", 1, make_order(MAX_CLOCK, "z", 1, "buy", "limit", SCALE, SCALE, ""))]))
    for attempt in (lambda: b.place("sell", "1", "1", now_ms=5),
                    lambda: a.cancel("a:1", now_ms=MAX_CLOCK)):
        with pytest.raises(ReplicaError):
            attempt()


def test_digest_tracks_the_event_set():
    a, b = Replica("a"), Replica("b")
    empty = a.digest()
    placed = a.place("sell", "1", "10", now_ms=1)
    assert a.digest() != empty
    b.merge(placed.delta)
    assert b.digest() == a.digest()
    other = Replica("c")
    other.merge(b.place("buy", "1", "9", now_ms=2).delta)
    assert other.digest() not in (empty, a.digest())
