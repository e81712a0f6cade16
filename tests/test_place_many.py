"""Replica.place_many, and the origin path's results as the node reads them.

place_many must be placing the orders one by one in a single call: the same
events, fills, book and views; its one delta is the union of the per-order
deltas; a bad order refuses the whole batch before anything is placed.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.aworset import AWORSet
from crdtbook.clock import MAX_CLOCK
from crdtbook.events import make_order
from crdtbook.replica import BatchOrderError, Replica, ReplicaError
from crdtbook.views import Placed

NOW = 1_700_000_000_000

orders = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.integers(1, 9).map(str),
        st.integers(95, 105).map(lambda p: f"{p // 10}.{p % 10}" if p % 10 else str(p // 10)),
        st.sampled_from(["limit", "limit", "limit", "ioc", "fok", "post_only"]),
        st.sampled_from(["", "acct-1"]),
    ),
    min_size=1, max_size=25,
)


def seeded(replica: Replica) -> None:
    """Some resting orders of another replica to trade against."""
    other = Replica("z")
    for i, (side, price) in enumerate([("sell", "10.1"), ("sell", "10.3"), ("buy", "9.9"),
                                       ("buy", "9.6"), ("sell", "10")]):
        replica.merge(other.place(side, "3", price, now_ms=NOW - 100 + i).delta)


def summary(replica: Replica):
    return replica.digest(), replica.fills(), replica.book(), replica.orders()


@settings(max_examples=60, deadline=None)
@given(orders, st.booleans())
def test_a_batch_is_the_same_as_its_orders_one_by_one(batch, seed):
    one, many = Replica("a"), Replica("a")
    if seed:
        seeded(one)
        seeded(many)
    singles = [one.place(*order, now_ms=NOW) for order in batch]
    placed = many.place_many(batch, now_ms=NOW)
    assert summary(many) == summary(one)
    assert [(p.order, p.fills) for p in placed] == [(p.order, p.fills) for p in singles]
    # One delta for the batch: the union of the per-order deltas, shared by all.
    union = AWORSet()
    for single in singles:
        union.merge(single.delta)
    assert placed[0].delta == union
    assert all(p.delta is placed[0].delta for p in placed)
    # ... and a peer that merges it gets the same state as one merging them one by one.
    peer_one, peer_many = Replica("p"), Replica("p")
    if seed:
        seeded(peer_one)
        seeded(peer_many)
    for single in singles:
        peer_one.merge(single.delta)
    peer_many.merge(placed[0].delta)
    assert summary(peer_many) == summary(peer_one)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (("hold", "1", "10", "limit", ""), "side must be one of"),
        (("buy", "1", "10", "stop", ""), "type must be one of"),
        (("buy", "0", "10", "limit", ""), "quantity '0' must be positive"),
        (("buy", "1", "1e3", "limit", ""), "not a plain decimal"),
        (("buy", "1", None, "limit", ""), "a limit order needs a price"),
        (("buy", "1", "10", "market", ""), "a market order takes no price"),
        (("buy", "1", "10", "limit", "a\nb"), "printable"),
        (("buy", "1", "10"), "an order is (side, qty, price, type, account)"),
        (None, "an order is (side, qty, price, type, account)"),
        ((["buy"], "1", "10", "limit", ""), "side must be one of"),
    ],
)
def test_a_bad_order_refuses_the_batch_before_anything_is_placed(bad, message):
    replica = Replica("a")
    replica.place("sell", "1", "10", now_ms=NOW)
    before = summary(replica)
    clock = replica.clock.last
    good = ("buy", "1", "10", "limit", "")
    with pytest.raises(BatchOrderError) as refused:
        replica.place_many([good, good, bad, good], now_ms=NOW)
    assert message in str(refused.value)
    assert refused.value.index == 2
    assert isinstance(refused.value, ReplicaError)
    assert summary(replica) == before and replica.clock.last == clock


def test_a_lone_place_refuses_with_the_same_message():
    replica = Replica("a")
    with pytest.raises(ReplicaError, match="a limit order needs a price"):
        replica.place("buy", "1", None, "limit")
    with pytest.raises(BatchOrderError, match="a limit order needs a price"):
        replica.place_many([("buy", "1", None, "limit", "")])


def test_a_batch_the_clock_cannot_stamp_is_refused_whole():
    replica = Replica("a")
    replica.merge(AWORSet.from_entries(
        [("z", 1, make_order(MAX_CLOCK - 2, "z", 1, "buy", "limit", 10**8, 10**8, ""))]))
    before = summary(replica)
    with pytest.raises(ReplicaError, match="cannot stamp 3 new events"):
        replica.place_many([("sell", "1", "20", "limit", "")] * 3, now_ms=NOW)
    assert summary(replica) == before
    assert len(replica.place_many([("sell", "1", "20", "limit", "")] * 2, now_ms=NOW)) == 2


def test_an_empty_batch_places_nothing():
    replica = Replica("a")
    assert replica.place_many([], now_ms=NOW) == []
    assert replica.events() == []


def test_node_requests_are_orders():
    from node.api.requests import OrderRequest

    replica = Replica("a")
    placed = replica.place_many([OrderRequest("sell", "2", "10", "limit", "x"),
                                 OrderRequest("buy", "1", "11", "ioc", "y")], now_ms=NOW)
    assert [p.order.status for p in placed] == ["open", "filled"]
    assert placed[1].fills[0].maker == placed[0].order.dot


def test_placed_views_match_the_replicas_own_views():
    # The views built straight from the engine outcome are what order() says.
    replica = Replica("a")
    seeded(replica)
    results = []
    for order in [("buy", "9", "10.2"), ("sell", "1", "9", "ioc"), ("buy", "20", "10.5", "fok"),
                  ("buy", "1", "10.5", "post_only"), ("sell", "1", None, "market")]:
        placed = replica.place(*order, now_ms=NOW)
        view = placed.order
        assert view == replica.order(view.dot)
        assert placed.fills == [f for f in replica.fills() if f.taker == view.dot]
        results.append(placed)
    assert [p.order.status for p in results] == ["open", "filled", "rejected", "rejected",
                                                 "filled"]
    assert [len(p.fills) for p in results] == [2, 1, 0, 0, 1]
    cancelled = replica.cancel(results[0].order.dot, now_ms=NOW)
    assert cancelled.cancel == replica.cancel_view(cancelled.cancel.dot)
    assert (cancelled.cancel.status, cancelled.cancel.removed) == ("cancelled", 10**8)
    assert cancelled.delta == AWORSet.from_entries(
        [("a", cancelled.cancel.dot.seq, replica.state.get("a", cancelled.cancel.dot.seq))])


def test_results_read_as_tuples_did():
    replica = Replica("a")
    placed = replica.place("sell", "1", "10", now_ms=NOW)
    delta, view, fills = placed
    assert (delta, view, fills) == (placed.delta, placed.order, placed.fills)
    assert placed == Placed(placed.delta, view, fills)
    assert placed.delta is placed.delta  # made once
    assert "Placed(delta=" in repr(placed)
    assert delta == AWORSet.from_entries([("a", 1, replica.state.get("a", 1))])


class _Text(str):
    """A str subclass: never the memo's exact type, so parse_amount decides."""


def _checked_plainly(qty, price, account):
    """_checked_order's amounts and account by the plain calls, as before the memo's
    and the account's common cases were read inline."""
    from crdtbook.amount import parse_amount
    from crdtbook.events import check_account
    try:
        units, price_units = parse_amount(qty, "quantity"), parse_amount(price, "price")
        if account != "":
            check_account(account)
    except ValueError as exc:
        return "refused", str(exc)
    return units, price_units, account


def test_the_inline_amount_memo_and_account_check_agree_with_the_plain_calls():
    from crdtbook.amount import _RECENT
    from crdtbook.replica import _checked_order
    amounts = ["1", "1.5", "1.50", "0", "01", "1e3", " 1", "1.123456789", _Text("1.5"),
               _Text("x"), 1, 1.5, True, b"1", ["1"]]  # None: a price rule of its own
    accounts = ["", "a", "a" * 64, "a" * 65, "a\tb", "\u200b", _Text("a"), _Text("a\n"), 5,
                None, b"a", ["a"]]
    for primed in (False, True):
        _RECENT.clear()
        if primed:  # the memo holds every valid plain spelling above
            for text in amounts:
                if type(text) is str and _checked_plainly(text, "1", "")[0] != "refused":
                    assert text in _RECENT
        for qty in amounts:
            for price in amounts:
                for account in accounts:
                    expected = _checked_plainly(qty, price, account)
                    try:
                        got = _checked_order("buy", qty, price, "limit", account)
                    except ReplicaError as exc:
                        assert expected == ("refused", str(exc))
                    else:  # got: side, type, price units, quantity units, account
                        assert expected == (got[3], got[2], got[4])
                        assert type(got[2]) is int and type(got[3]) is int
