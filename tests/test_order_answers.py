"""The HTTP batch path's parse, entitlement and answers, held to their plain forms.

parse_orders, entitled and the answers (orderentry.placed_answers,
views.order_json/fill_json) were made cheaper per order (docs/performance.md,
"The durable cluster, eighth pass"): NamedTuples built without their frames,
the "order i: " prefix made only for a refusal, amounts formatted through a
bounded memo, the view unpacked once, the frontier read once per batch. These
tests hold each to what it replaced: the same fields, the same refusal naming
the same order, the same answer as one made field by field with format_amount,
str(dot), Fill.id, iso_time and Replica.order_final.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.amount import format_amount
from crdtbook.events import MARKET
from crdtbook.replica import Replica
from node.api import auth, orderentry, views
from node.api.requests import OrderRequest, parse_orders
from node.asgi import BadRequest
from node.service import iso_time

NOW = 1_700_000_000_000


class _Limiter:
    def __init__(self) -> None:
        self.taken = []

    def take(self, costs) -> None:
        self.taken.append(dict(costs))


class _Node:
    def __init__(self) -> None:
        self.limiter = _Limiter()


def test_a_batch_parses_to_order_requests_with_every_field():
    orders, batch = parse_orders(
        b'[{"side":"buy","qty":"1.5","price":"10"},'
        b'{"side":"sell","qty":"2","type":"market","account":"acct-1"}]')
    assert batch is True
    assert orders == [OrderRequest("buy", "1.5", "10", "limit", ""),
                      OrderRequest("sell", "2", None, "market", "acct-1")]
    assert all(type(o) is OrderRequest for o in orders)
    assert orders[1].account == "acct-1" and orders[0].type == "limit"


@pytest.mark.parametrize("bad, detail", [
    (b'{"side":"buy","qty":"1","price":"1","colour":"red"}',
     "order 2: unknown field(s) 'colour'"),
    (b'{"side":"up","qty":"1","price":"1"}', "order 2: side must be"),
    (b'{"side":"buy","qty":"1.123456789","price":"1"}', "order 2: "),
    (b'{"side":"buy","qty":"1"}', "order 2: a limit order needs a price"),
    (b'"x"', "order 2: an order must be a JSON object"),
])
def test_a_refused_batch_names_the_order_that_was_refused(bad, detail):
    good = b'{"side":"buy","qty":"1","price":"1"}'
    with pytest.raises(BadRequest) as refused:
        parse_orders(b"[" + b",".join([good, good, bad, good, bad]) + b"]")
    assert refused.value.detail.startswith(detail)
    with pytest.raises(BadRequest) as alone:  # one order, not a batch: no prefix
        parse_orders(bad)
    assert alone.value.detail == refused.value.detail[len("order 2: "):]


def test_entitled_gives_each_order_its_account_and_counts_them():
    node = _Node()
    orders, _ = parse_orders(b'[{"side":"buy","qty":"1","price":"1"},'
                             b'{"side":"buy","qty":"1","price":"1","account":"alice"},'
                             b'{"side":"buy","qty":"1","price":"1"}]')
    given_orders = auth.entitled(node, auth.Principal("alice"), orders)
    assert [o.account for o in given_orders] == ["alice"] * 3
    assert all(type(o) is OrderRequest for o in given_orders)
    assert [o._replace(account="") for o in given_orders] == \
        [o._replace(account="") for o in orders]
    assert node.limiter.taken == [{"alice": 3}]
    admin = auth.entitled(node, auth.ANYONE, orders)
    assert [o.account for o in admin] == ["", "alice", ""]
    assert node.limiter.taken[-1] == {"": 2, "alice": 1}
    with pytest.raises(BadRequest):
        auth.entitled(node, auth.Principal("bob"), orders)


def _plain_answer(replica: Replica, placed) -> dict:
    """An order's answer made field by field, as before the eighth pass."""
    view = placed.order
    return {
        "order": {
            "id": str(view.dot), "replica": view.dot.replica, "seq": view.dot.seq,
            "clock": view.clock, "side": view.side, "type": view.type,
            "price": None if view.type == MARKET else format_amount(view.price),
            "qty": format_amount(view.qty), "filled": format_amount(view.filled),
            "resting": format_amount(view.resting),
            "cancelled": format_amount(view.cancelled), "status": view.status,
            "reason": view.reason, "final": replica.order_final(view),
            "account": view.account, "time": iso_time(view.clock),
        },
        "fills": [{"id": f.id, "taker": str(f.taker), "maker": str(f.maker),
                   "price": format_amount(f.price), "qty": format_amount(f.qty),
                   "taker_side": f.taker_side, "final": False,
                   "time": iso_time(view.clock)} for f in placed.fills],
    }


order_batches = st.lists(
    st.lists(st.tuples(
        st.sampled_from(["buy", "sell"]),
        st.integers(1, 400).map(lambda q: format_amount(q * 10**6)),
        st.integers(95, 105).map(str),
        st.sampled_from(["limit", "limit", "ioc", "fok", "post_only", "market"]),
        st.sampled_from(["", "acct-1"]),
    ), min_size=1, max_size=12),
    min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(order_batches)
def test_answers_are_the_plain_ones(batches):
    replica = Replica("n" + "a" * 31)
    for i, batch in enumerate(batches):
        orders = [(s, q, None if t == MARKET else p, t, a) for s, q, p, t, a in batch]
        placed = replica.place_many(orders, now_ms=NOW + i)
        extra = {"replicated": True} if i % 2 else None
        answers = orderentry.placed_answers(replica, placed, extra)
        assert answers == [{**_plain_answer(replica, p), **(extra or {})} for p in placed]
        assert [list(a) for a in answers] == [list(_plain_answer(replica, p)) + list(extra or {})
                                             for p in placed]  # the same key order
        assert [orderentry.placed_json(replica, p, extra) for p in placed] == answers


def test_a_final_order_is_answered_final():
    replica = Replica("n" + "a" * 31)  # alone: F follows its own clock
    replica.place_many([("sell", "1", "10", "limit", "")], now_ms=NOW)
    placed = replica.place_many([("buy", "1", "10", "limit", "")], now_ms=NOW + 5)
    replica.frontier()
    (answer,) = orderentry.placed_answers(replica, placed)
    assert answer["order"]["status"] == "filled"
    assert answer["order"]["final"] == replica.order_final(placed[0].order)


def test_the_amount_memo_is_bounded_and_exact():
    views._AMOUNT_TEXTS.clear()
    for units in range(1, 3 * views._AMOUNT_TEXTS_MAX, 7):
        assert views.amount_text(units * 12_345_679) == format_amount(units * 12_345_679)
        assert len(views._AMOUNT_TEXTS) <= views._AMOUNT_TEXTS_MAX
    assert views.amount_text(0) == "0" == format_amount(0)
    assert views.amount_text(10**20) == format_amount(10**20)


def test_answers_of_orders_stamped_in_different_milliseconds_keep_each_its_time():
    """placed_answers makes the ISO time once per millisecond of the batch: orders
    of other milliseconds and seconds in one call each get their own."""
    replica = Replica("n" + "a" * 31)
    placed = []
    for i, ms in enumerate([0, 0, 1, 999, 1000, 1000, 61_000, 61_000, 3_600_001, 2]):
        side = "buy" if i % 2 else "sell"
        placed += replica.place_many([(side, "1", "10", "limit", "acct-1")], now_ms=NOW + ms)
    times = [iso_time(p.order.clock) for p in placed]
    assert len(set(times)) == 6  # the last, stamped earlier, keeps its forerunner's ms (hybrid)
    answers = orderentry.placed_answers(replica, placed, {"replicated": True})
    assert answers == [{**_plain_answer(replica, p), "replicated": True} for p in placed]
    assert [a["order"]["time"] for a in answers] == times
    assert any(a["fills"] for a in answers)
