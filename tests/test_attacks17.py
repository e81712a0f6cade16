"""Attacks on the cluster-CPU pass's rewritten hot paths, against real nodes where
it is about the wire.

The pass rewrote order entry's parser (node/api/requests.py: the field check
without sets, NamedTuples without their frames, the "order i: " prefix made
only for a refusal), ``auth.entitled`` (accounts by Counter), the answers
(node/api/views.py: amounts formatted through a bounded memo),
``Replica.hash_pending`` (one pass of C calls) and compaction's stored rows
(node/service.py). Each test is one attack and passes when the rewrite kept
main's promises: every malformed order refused with main's very 4xx, detail
and all (the tables below are main's answers, recorded side by side with the
branch's), a refused request changing nothing (book, events, rate-limit
buckets), an accepted one charged as main charged it, answers with main's
bytes, the digest equal to its per-event definition, and stored history that
reads the same before and after compaction and a kill -9.
"""

from __future__ import annotations

import json
import random

import pytest
import trio

import crdtbook.replica as replica_module
from crdtbook.amount import format_amount
from crdtbook.events import make_cancel, make_order
from crdtbook.feedwire import block_from_wire, encode_body, encodings
from crdtbook.replica import Replica
from node.api import auth, orderentry, views
from node.api.requests import OrderRequest, parse_orders
from node.asgi import BadRequest
from node.service import final_order, iso_time, stored_fill
from node.store.sqlite import FinalOrder, StoredFill

from .nodes import LIVENESS_S, bearer, client, eventually, start

GOOD = {"side": "sell", "qty": "1", "price": "20"}
BURST = 50
NEEDS_DECIMAL = " must be a decimal string such as \"12.5\", got "
NOT_PLAIN = " is not a plain decimal number such as \"12.5\""
ALLOWED = "; allowed: side, qty, price, type, account"
BAD_ACCOUNT = "account must be a string of at most 64 printable characters"
NOT_ALICE = "this token is account 'alice''s; it cannot act for account "
NOT_AN_ORDER = "an order must be a JSON object"
BAD_SIDE = 'side must be "buy" or "sell"'
BAD_TYPE = "type must be one of limit, market, ioc, fok, post_only"


def _j(value) -> bytes:
    return json.dumps(value).encode()


def _with(position: int, item, size: int = 10) -> bytes:
    batch: list = [GOOD] * size
    batch[position] = item
    return _j(batch)


def _raw(field: str, text: bytes) -> bytes:
    other = b'"price": "20"' if field == "qty" else b'"qty": "1"'
    return b'{"side": "sell", ' + other + b', "' + field.encode() + b'": ' + text + b"}"


# (body, status, error, detail) as main answered alice's token (rate 0.001/s, burst 50)
REFUSED = [
    (b"", 400, "bad_json", "request body is empty; expected JSON"),
    (b"null", 400, "bad_order", NOT_AN_ORDER),
    (b"true", 400, "bad_order", NOT_AN_ORDER),
    (b'"x"', 400, "bad_order", NOT_AN_ORDER),
    (b"[]", 400, "bad_order", "an order batch must not be empty"),
    (b"{}", 400, "bad_order", BAD_SIDE),
    (b"[[]]", 400, "bad_order", "order 0: " + NOT_AN_ORDER),
    (b"[{}]", 400, "bad_order", "order 0: " + BAD_SIDE),
    (_j([[GOOD]]), 400, "bad_order", "order 0: " + NOT_AN_ORDER),
    (b"[" * 100_000 + b"]" * 100_000, 400, "bad_json", "request body is nested too deeply"),
    (_j(GOOD) + b" x", 400, "bad_json",
     "request body is not valid JSON: Extra data: line 1 column 45 (char 44)"),
    (_j({"side": "sell", "qty": "1"}), 400, "bad_order", "a limit order needs a price"),
    (_j({"side": "sell", "price": "1"}), 400, "bad_order", "qty is required"),
    (_j({"qty": "1", "price": "1"}), 400, "bad_order", BAD_SIDE),
    (_j({**GOOD, "foo": 1}), 400, "bad_order", "unknown field(s) 'foo'" + ALLOWED),
    (_j({"foo": 1}), 400, "bad_order", "unknown field(s) 'foo'" + ALLOWED),
    (_j({**GOOD, "Side": "buy", "zz": 1, "aa": 2}), 400, "bad_order",
     "unknown field(s) 'Side', 'aa', 'zz'" + ALLOWED),
    (_j({**GOOD, " side": "sell"}), 400, "bad_order", "unknown field(s) ' side'" + ALLOWED),
    (_j({**GOOD, "s\u00efde": 1}), 400, "bad_order", "unknown field(s) 's\u00efde'" + ALLOWED),
    (_j({**GOOD, **{f"x{i}": i for i in range(9)}}), 400, "bad_order",
     "unknown field(s) 'x0', 'x1', 'x2', 'x3', 'x4'" + ALLOWED),
    (b'{"side": "sell", "side": "sell", "qty": "1", "price": "20"}', 400, "bad_json",
     "key 'side' appears twice in an object"),
    (b'{"side": "sell", "qty": "1", "qty": "2", "price": "20"}', 400, "bad_json",
     "key 'qty' appears twice in an object"),
    *[(_j({**GOOD, "side": side}), 400, "bad_order", BAD_SIDE)
      for side in ("BUY", "buy ", True, 1, None, ["buy"], {"a": 1}, "", "buy\u200b")],
    *[(_j({**GOOD, "type": kind}), 400, "bad_order", BAD_TYPE)
      for kind in ("LIMIT", None, True, 1, "", "market ", ["limit"], "post-only")],
    (_j({**GOOD, "type": "market"}), 400, "bad_order", "a market order takes no price"),
    (_j({**GOOD, "price": None}), 400, "bad_order", "a limit order needs a price"),
    *[(_j({**GOOD, field: value}), 400, "bad_amount", field + NEEDS_DECIMAL + kind)
      for field in ("qty", "price")
      for value, kind in ((1, "int"), (0, "int"), (True, "bool"), (False, "bool"),
                          ([], "list"), (["1"], "list"), ({"v": "1"}, "dict"))],
    (_j({**GOOD, "qty": None}), 400, "bad_amount", "qty" + NEEDS_DECIMAL + "NoneType"),
    *[(_j({**GOOD, field: text}), 400, "bad_amount", f"{field} {text!r}{NOT_PLAIN}")
      for field in ("qty", "price")
      for text in ("NaN", "nan", "Infinity", "-Infinity", "-0", "-1", "+1", " 1", "1 ", "\t1",
                   "\u0661", "\uff11", "\U0001d7cf", "\u00b2", "1_000", "0x10", "1e3", "1E3",
                   "1e-3", "1.", ".5", "1,5", "1.5.5", "", " ", "1\u00a0", "\uff11.\uff15",
                   "\u00bd", "1/2")],
    *[(_j({**GOOD, field: text}), 400, "bad_amount", f"{field} {text!r} must be positive")
      for field in ("qty", "price") for text in ("0", "0.0", "00")],
    *[(_j({**GOOD, field: text}), 400, "bad_amount",
       f"{field} {text!r} has more than 8 fractional digits")
      for field in ("qty", "price")
      for text in ("1.000000001", "0.000000001", "1.00000000000000000001")],
    *[(_j({**GOOD, field: text}), 400, "bad_amount",
       f"{field} {text[:40]!r} exceeds the maximum of 1000000000000")
      for field in ("qty", "price")
      for text in ("9" * 100, "1" + "0" * 20, "9" * 20, "1" + "0" * 30)],
    *[(_raw(field, number), 400, "bad_number",
       f"number {number.decode()} is not allowed: send amounts as decimal strings like \"12.5\"")
      for field in ("qty", "price") for number in (b"1.5", b"1e3", b"1.0", b"1E400")],
    *[(_raw(field, constant), 400, "bad_number", f"{constant.decode()} is not allowed in a request")
      for field in ("qty", "price") for constant in (b"NaN", b"Infinity", b"-Infinity")],
    *[(_raw(field, number), 400, "bad_amount", field + NEEDS_DECIMAL + "int")
      for field in ("qty", "price") for number in (b"-0", b"0", b"-1", b"1" + b"0" * 30)],
    (_raw("qty", b"1" + b"0" * 5000), 400, "bad_json",
     "request body is not valid JSON: Exceeds the limit (4300 digits) for integer string "
     "conversion: value has 5001 digits; use sys.set_int_max_str_digits() to increase the "
     "limit"),  # (cut at 200 characters)
    *[(_j({**GOOD, "account": account}), 400, "bad_order", BAD_ACCOUNT)
      for account in (1, None, True, "a" * 65, "\n", "ali\x00ce", "alice\u200b", ["alice"],
                      {"a": "alice"})],
    # lookalikes of alice's own name are other accounts' names
    *[(_j({**GOOD, "account": account}), 403, "forbidden", f"{NOT_ALICE}{account!r}")
      for account in ("alice ", " alice", "Alice", "ALICE", "\uff41lice", "al\u0131ce", "bob",
                      "local", "alice\u0301", "caf\u00e9", "cafe\u0301", "a" * 64)],
]
for _i in (0, 5, 9):
    REFUSED += [
        (_with(_i, {**GOOD, "qty": "-1"}), 400, "bad_amount", f"order {_i}: qty '-1'{NOT_PLAIN}"),
        (_with(_i, 7), 400, "bad_order", f"order {_i}: {NOT_AN_ORDER}"),
        (_with(_i, None), 400, "bad_order", f"order {_i}: {NOT_AN_ORDER}"),
        (_with(_i, [GOOD]), 400, "bad_order", f"order {_i}: {NOT_AN_ORDER}"),
        (_with(_i, {**GOOD, "zz": 1}), 400, "bad_order", f"order {_i}: unknown field(s) 'zz'"
         + ALLOWED),
        (_with(_i, {**GOOD, "account": "alice\u200b"}), 400, "bad_order",
         f"order {_i}: {BAD_ACCOUNT}"),
        *[(_with(_i, {**GOOD, "account": account}), 403, "forbidden", f"{NOT_ALICE}{account!r}")
          for account in ("bob", "alice ", "Alice", "\uff41lice", "alice\u0301")],
    ]
REFUSED += [
    (_j([GOOD, {**GOOD, "qty": "x"}, {**GOOD, "side": "x"}]), 400, "bad_amount",
     f"order 1: qty 'x'{NOT_PLAIN}"),
    # every order is parsed before any account is checked
    (_j([{**GOOD, "account": "bob"}, {**GOOD, "qty": "x"}]), 400, "bad_amount",
     f"order 1: qty 'x'{NOT_PLAIN}"),
    (_j([GOOD] * 10_001), 413, "batch_too_large", "a batch holds at most 10000 orders, got 10001"),
    (_j([GOOD] * 10_000), 413, "batch_too_large",
     f"10000 orders at once exceed this node's rate burst ({BURST}); send smaller batches"),
    (_j([GOOD] * (BURST + 1)), 413, "batch_too_large",
     f"{BURST + 1} orders at once exceed this node's rate burst ({BURST}); send smaller batches"),
]


def _picture(running) -> tuple:
    node = running.node
    return (node.replica.digest(), node.replica.book(), node.replica.events_total(),
            dict(node.limiter.buckets))


@pytest.fixture
async def alice_node(nursery, tmp_path):
    """A durable node with accounts alice and bob; a slow rate (0.001/s) and a burst of
    50: a charge shows in a bucket for the whole test."""
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0.001, rate_burst=BURST)
    tokens = {}
    async with client(local_token=False) as http:
        for name in ("alice", "bob"):
            r = await http.post(a.url + "/accounts", json={"account": name}, headers=a.admin)
            assert r.status_code == 201, r.text
            tokens[name] = r.json()["token"]
    return a, tokens


async def test_every_malformed_order_gets_mains_4xx_and_changes_nothing(alice_node):
    a, tokens = alice_node
    async with client(local_token=False) as http:
        r = await http.post(a.url + "/orders", json=GOOD, headers=bearer(tokens["alice"]))
        assert r.status_code == 201  # a bucket to leave untouched, a book to keep
        for body, status, error, detail in REFUSED:
            before = _picture(a)
            r = await http.post(a.url + "/orders", content=body,
                                headers={**bearer(tokens["alice"]),
                                         "content-type": "application/json"})
            case = body[:80]
            assert (r.status_code, r.json()) == (status, {"error": error, "detail": detail}), case
            assert _picture(a) == before, case
        with trio.fail_after(LIVENESS_S):  # and it still trades
            r = await http.post(a.url + "/orders", json=[GOOD, GOOD],
                                headers=bearer(tokens["alice"]))
        assert r.status_code == 201 and a.node.limiter.buckets["alice"][0] == pytest.approx(
            BURST - 3, abs=0.01)


async def test_an_accepted_batch_charges_each_account_its_count_a_refused_one_nothing(
        alice_node):
    a, tokens = alice_node
    order = {**GOOD, "type": "ioc"}  # nothing rests: the book stays as it is
    async with client(local_token=False) as http:
        r = await http.post(a.url + "/orders", headers=a.admin, json=[
            {**order, "account": "x"}, {**order, "account": "y"}, {**order, "account": "x"},
            {**order, "account": ""}, {**order, "account": "x"}])
        assert r.status_code == 201
        assert [o["order"]["account"] for o in r.json()] == ["x", "y", "x", "", "x"]
        levels = {k: round(v[0], 2) for k, v in a.node.limiter.buckets.items()}
        assert levels == {"x": BURST - 3, "y": BURST - 1, "": BURST - 1}
        # an order naming nobody gets its principal's account, and is charged to it
        r = await http.post(a.url + "/orders", json=[order, {**order, "account": "alice"}],
                            headers=bearer(tokens["alice"]))
        assert r.status_code == 201 and [o["order"]["account"] for o in r.json()] == ["alice"] * 2
        assert a.node.limiter.buckets["alice"][0] == pytest.approx(BURST - 2, abs=0.01)
        refusals = [
            (a.admin, [{**order, "account": "x"}] * (BURST - 2), 429),  # x holds 47
            (a.admin, [{**order, "account": "y"}] * 3 + [{**order, "account": "x"}] * 48, 429),
            (a.admin, [{**order, "account": "y"}] * 3 + [{**order, "account": 5}], 400),
            (bearer(tokens["alice"]), [order] * 2 + [{**order, "account": "bob"}], 403),
            (bearer(tokens["alice"]), [order] * (BURST - 1), 429),
            (bearer(tokens["bob"]), [order] * 3 + [{**order, "account": "alice"}], 403),
        ]
        for headers, batch, status in refusals:
            before = _picture(a)
            r = await http.post(a.url + "/orders", json=batch, headers=headers)
            assert r.status_code == status, r.text
            assert _picture(a) == before
        assert "bob" not in a.node.limiter.buckets  # bob was never charged


def test_entitled_takes_lookalike_accounts_for_what_they_are():
    class Limiter:
        def __init__(self) -> None:
            self.taken: list[dict] = []

        def take(self, costs) -> None:
            self.taken.append(dict(costs))

    class Node:
        limiter = Limiter()

    def order(account: str) -> OrderRequest:
        return OrderRequest("buy", "1", "2", "limit", account)

    alice = auth.Principal("".join(["ali", "ce"]))  # equal text, another object
    same = "".join(["al", "ice"])
    assert same == alice.account and same is not alice.account
    got = auth.entitled(Node, alice, [order(same), order(""), order("alice")])
    assert [o.account for o in got] == ["alice"] * 3
    assert all(type(o) is OrderRequest and o[:4] == ("buy", "1", "2", "limit") for o in got)
    assert Node.limiter.taken == [{"alice": 3}]
    for lookalike in ("alice ", "Alice", "\uff41lice", "alice\u0301", "al\u0131ce", "alic\u0435"):
        for position in range(3):
            batch = [order("")] * 3
            batch[position] = order(lookalike)
            with pytest.raises(auth.Denied) as refused:
                auth.entitled(Node, alice, batch)
            assert refused.value.status == 403
    assert Node.limiter.taken == [{"alice": 3}]  # no refusal charged anything
    # the admin's orders keep the accounts they name, each counted under its own text
    got = auth.entitled(Node, auth.ANYONE, [order("x"), order("x "), order(""), order("x")])
    assert [o.account for o in got] == ["x", "x ", "", "x"]
    assert Node.limiter.taken[-1] == {"x": 2, "x ": 1, "": 1}
    assert list(Node.limiter.taken[-1]) == ["x", "x ", ""]  # first seen, first charged


def test_a_batch_refusal_names_the_first_bad_order_and_a_good_batch_parses_to_its_fields():
    rng = random.Random(17)
    bad = [{**GOOD, "qty": "1e3"}, 7, {**GOOD, "x": 1}, {**GOOD, "account": 3},
           {**GOOD, "side": "BUY"}, {**GOOD, "type": "market"}]
    for _ in range(300):
        size = rng.choice([1, 2, 3, 50, 300])
        batch: list = [{**GOOD, "qty": str(rng.randrange(1, 10**6))} for _ in range(size)]
        wrong = sorted(rng.sample(range(size), min(size, rng.choice([0, 1, 2]))))
        for i in wrong:
            batch[i] = rng.choice(bad)
        if not wrong:
            orders, is_batch = parse_orders(_j(batch))
            assert is_batch and all(type(o) is OrderRequest for o in orders)
            assert [o._asdict() for o in orders] == [
                {"side": "sell", "qty": b["qty"], "price": "20", "type": "limit", "account": ""}
                for b in batch]
            continue
        with pytest.raises(BadRequest) as refused:
            parse_orders(_j(batch))
        assert refused.value.detail.startswith(f"order {wrong[0]}: "), refused.value.detail


def test_the_amount_memo_never_gives_one_amounts_text_for_another():
    rng = random.Random(22)
    views._AMOUNT_TEXTS.clear()
    seen = [1]
    for _ in range(3 * views._AMOUNT_TEXTS_MAX):  # past the bound, three times over
        units = rng.choice([rng.randrange(1, 10**4), rng.randrange(1, 10**21),
                            10**20 + rng.randrange(10**8), rng.randrange(1, 10**8) * 10**8,
                            rng.choice(seen)])
        text = views.amount_text(units)
        whole, _, frac = text.partition(".")
        assert text == format_amount(units)
        assert int(whole) * 10**8 + int(frac.ljust(8, "0") or "0") == units  # its own value
        seen.append(units)
        assert len(views._AMOUNT_TEXTS) <= views._AMOUNT_TEXTS_MAX
    for units, text in views._AMOUNT_TEXTS.items():
        assert text == format_amount(units)
    # amounts equal as numbers, other objects or types, get the text of their value
    for units in (1, 10**8, 10**20, 10**20 + 1):
        assert views.amount_text(units) == format_amount(units)
        assert views.amount_text(int(str(units))) == format_amount(units)
    assert views._amount(0) == "0" and format_amount(0) == "0"


def _reference_placed(order, fills, final: bool, extra) -> dict:
    """main's placed_json, written from its fields (format_amount and str(dot) each time)."""
    amount = format_amount
    return {
        "order": {"id": str(order.dot), "replica": order.dot.replica, "seq": order.dot.seq,
                  "clock": order.clock, "side": order.side, "type": order.type,
                  "price": None if order.type == "market" else amount(order.price),
                  "qty": amount(order.qty), "filled": amount(order.filled),
                  "resting": amount(order.resting), "cancelled": amount(order.cancelled),
                  "status": order.status, "reason": order.reason, "final": final,
                  "account": order.account, "time": iso_time(order.clock)},
        "fills": [{"id": f.id, "taker": str(f.taker), "maker": str(f.maker),
                   "price": amount(f.price), "qty": amount(f.qty), "taker_side": f.taker_side,
                   "final": False, "time": iso_time(order.clock)} for f in fills],
        **(extra or {}),
    }


async def test_answers_are_mains_bytes_for_a_seeded_workload(nursery):
    a = await start(nursery)
    node = a.node
    rng = random.Random(2222)
    views._AMOUNT_TEXTS.clear()
    prices = ["100", "100.0", "99.99999999", "0100", "98765432109.5", "0.00000001", "1000000000000"]
    qtys = ["1", "1.50", "0.5", "12345678901.12345678", "0.00000001", "7", "1000000000000"]
    answered = 0
    for step in range(150):
        orders = []
        for _ in range(rng.choice([1, 3, 40])):
            kind = rng.choice(["limit"] * 5 + ["market", "ioc", "fok", "post_only"])
            orders.append(OrderRequest(rng.choice(["buy", "sell"]), rng.choice(qtys),
                                       None if kind == "market" else rng.choice(prices), kind,
                                       rng.choice(["", "a", "b"])))
        if step % 50 == 49:  # fill the memo past its bound between batches
            for units in range(views._AMOUNT_TEXTS_MAX + 7):
                views.amount_text(10**20 + units)
        placed = node.place_many(orders)
        extra = rng.choice([None, {"replicated": True}, {"replicated": False}])
        got = orderentry.placed_answers(node.replica, placed, extra)
        expected = [_reference_placed(p.order, p.fills,
                                      node.replica.order_final(p.order), extra) for p in placed]
        assert json.dumps(got).encode() == json.dumps(expected).encode()
        assert [orderentry.placed_json(node.replica, p, extra) for p in placed] == expected
        answered += sum(bool(p.fills) for p in placed)
    assert answered > 100  # the workload crosses: fills are answered, not only orders


def test_compactions_rows_are_the_named_tuples_of_their_fields():
    replica = Replica("n1")
    replica.place("sell", "1.5", "20", now_ms=1000)
    replica.place("buy", "1.5", "20", account="b", now_ms=1001)
    view = replica.order("n1:2")
    row = final_order(view)
    assert type(row) is FinalOrder and row == FinalOrder(
        replica="n1", seq=2, status="filled", filled=150_000_000, reason=None)
    assert row._asdict() == {"replica": "n1", "seq": 2, "status": "filled",
                             "filled": 150_000_000, "reason": None}
    raw = replica.engine.fills[0]
    fill = stored_fill(7, raw)
    assert type(fill) is StoredFill and fill == StoredFill(
        index=7, clock=view.clock, taker=("n1", 2), maker=("n1", 1), price=20 * 10**8,
        qty=150_000_000, taker_side="buy", taker_account="b", maker_account="")
    assert views.stored_fill_json(fill, True)["price"] == "20"


SIG = b"s" * 64


def _feed(rng: random.Random, origin: str, count: int) -> list:
    events = []
    for seq in range(1, count + 1):
        clock = 1000 + seq
        if rng.random() < 0.8:
            events.append(make_order(clock, origin, seq, rng.choice(["buy", "sell"]), "limit",
                                     rng.randrange(1, 10**20), rng.randrange(1, 10**12),
                                     rng.choice(["", "alice", "x" * 30])))
        else:
            events.append(make_cancel(clock, origin, seq, "a", rng.randrange(1, 50)))
    return events


def _reference_sum(events, cutoff: dict) -> tuple[int, int]:
    """The digest's sum by its definition: each counted event's hash, one by one."""
    counted = [e for e in events if cutoff.get(e.replica) is None or e.seq <= cutoff[e.replica]]
    total = sum(replica_module._event_hash(e) for e in counted) % 2**256
    return total, len(events) - len(counted)


def test_hash_pending_equals_the_per_event_definition_for_any_mix():
    rng = random.Random(1717)
    for _ in range(60):
        origins = rng.sample(["a", "b" * 32, "c" * 24, "dd"], rng.randrange(1, 5))
        events, blocks = [], []
        for origin in origins:
            feed = _feed(rng, origin, rng.randrange(1, 30))
            block = block_from_wire([origin, 1, encode_body(feed), SIG], "block")
            events += block.events
            blocks.append(block)
        replica = Replica("me")
        assert sum(replica.merge_event(e) for e in events) == len(events)
        pending = list(replica._unhashed)
        found = dict(rng.choice([encodings(blocks), {}]))
        for event in rng.sample(pending, len(pending) // 3):  # some entries lie
            forged = event._replace()  # another object holding the same dot, or a reused id
            lie = rng.choice([(forged, (b"forged", b"")), (None, None),
                              (forged, (encode_body([forged]), b""))])
            found[id(event)] = lie
        cutoff = {o: rng.randrange(0, 30) for o in origins if rng.random() < 0.5}
        replica.membership.cutoff.update(cutoff)  # as a leave that held them back
        before, uncounted = replica._digest_sum, replica._uncounted
        replica.hash_pending(found)
        total, left_out = _reference_sum(pending, cutoff)
        assert replica._digest_sum == (before + total) % 2**256
        assert replica._uncounted == uncounted + left_out
        assert replica._unhashed == []
        replica.hash_pending(found)  # nothing pending: nothing changes
        assert replica._digest_sum == (before + total) % 2**256


async def test_digests_and_histories_agree_after_compaction_and_kill_9(tmp_path):
    """Real processes: trades until compaction wrote rows, then SIGKILL and a restart:
    GET /orders, /fills and /events read the same on both nodes and before the kill."""
    from .procs import NodeProcess, get, paged

    first = NodeProcess(str(tmp_path / "n0"))
    await first.start()
    second = NodeProcess(str(tmp_path / "n1"), first.url)
    await second.start()
    nodes = [first, second]
    try:
        async with client(timeout=5) as http:
            async def joined():
                status = await get(http, second.url, "/status")
                return status["joined"] and len(status["members"]) == 2
            await eventually(joined, timeout=30)
            rng = random.Random(9)
            for i in range(30):
                r = await http.post(nodes[i % 2].url + "/orders", json=[
                    {"side": rng.choice(["buy", "sell"]), "qty": rng.choice(["1", "0.5", "2.25"]),
                     "price": rng.choice(["100", "100.5", "99.99999999"]),
                     "type": rng.choice(["limit", "limit", "ioc"])} for _ in range(4)])
                assert r.status_code == 201, r.text

            async def compacted():
                statuses = [await get(http, n.url, "/status") for n in nodes]
                return all(s["events"] < s["events_total"] - 40 for s in statuses)
            await eventually(compacted, timeout=40, interval=0.5)

            async def histories(node):
                return [await paged(http, node.url, path, key) for path, key in
                        (("/orders", "orders"), ("/fills", "fills"), ("/events", "events"))]

            async def same_everywhere():
                statuses = [await get(http, n.url, "/status") for n in nodes]
                if statuses[0]["digest"] != statuses[1]["digest"]:
                    return None
                seen = [await histories(n) for n in nodes]
                orders, fills, _ = seen[0]
                settled = all(o["final"] for o in orders if o["status"] != "open") and all(
                    f["final"] for f in fills)  # F passed them: nothing of them changes now
                return seen[0] if settled and seen[0] == seen[1] else None
            before = await eventually(same_everywhere, timeout=30)
            assert len(before[1]) > 10  # fills, compacted ones among them
            for victim in nodes:
                victim.kill()
                await victim.start()
                after = await eventually(same_everywhere, timeout=30)
                assert after == before
    finally:
        for node in nodes:
            node.kill()


_EDGES = [1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]


def _mutated(rng: random.Random, body: bytes) -> bytes:
    """``body`` with one edit a forger or a bit flip could make."""
    at = rng.randrange(len(body))
    edit = rng.randrange(5)
    if edit == 0:  # a flipped bit
        return body[:at] + bytes([body[at] ^ (1 << rng.randrange(8))]) + body[at + 1:]
    if edit == 1:  # any byte
        return body[:at] + bytes([rng.randrange(256)]) + body[at + 1:]
    if edit == 2:  # a byte dropped
        return body[:at] + body[at + 1:]
    if edit == 3:  # a byte more
        return body[:at] + bytes([rng.randrange(256)]) + body[at:]
    # a head one size longer than the shortest: the same value, other bytes
    head = body[at]
    if head < 0x18:
        return body[:at] + b"\x18" + bytes([head]) + body[at + 1:]
    if head in (0x18, 0x19, 0x1a):
        width = {0x18: 1, 0x19: 2, 0x1a: 4}[head]
        value = body[at + 1:at + 1 + width]
        return body[:at] + bytes([head + 1]) + bytes(width) + value + body[at + 1 + width:]
    return body[:at] + body[at:]


def test_a_blocks_slices_are_its_events_canonical_cbor_whatever_its_body_holds():
    """The digest and the store trust a slice of a block's body as its event's
    canonical CBOR (feedwire.event_encodings): a body edited any way that still
    decodes must give either no slices or exactly those bytes."""
    import cbor2

    from crdtbook.codec import CodecError, event_to_wire
    from crdtbook.feedwire import event_encodings
    from node.store.sqlite import _event_body

    rng = random.Random(4242)
    sliced = decoded = 0
    for _ in range(4000):
        origin = rng.choice(["a", "k" * 32, "x" * 23])
        events = []
        for seq in range(1, rng.choice([1, 2, 5]) + 1):
            clock = rng.choice(_EDGES[:-1] + [rng.randrange(1, 2**40)])
            if rng.random() < 0.75:
                kind = rng.choice(["limit", "ioc", "market"])
                events.append(make_order(clock, origin, seq, rng.choice(["buy", "sell"]), kind,
                                         0 if kind == "market" else rng.choice(_EDGES),
                                         rng.choice(_EDGES), rng.choice(["", "al", "b" * 23])))
            else:
                events.append(make_cancel(clock, origin, seq, rng.choice(["a", "k" * 32]),
                                          rng.choice(_EDGES)))
        body = encode_body(events)
        for _ in range(rng.choice([0, 1, 1, 2])):
            body = _mutated(rng, body)
        try:
            block = block_from_wire([origin, 1, body, SIG], "block")
        except (CodecError, ValueError, TypeError):
            continue
        decoded += 1
        found = event_encodings(block)
        if found is None:
            continue
        sliced += 1
        assert len(found) == len(block.events)
        for event, (full, tail) in zip(block.events, found, strict=True):
            assert full == cbor2.dumps(event_to_wire(event), canonical=True), body
            assert full.endswith(tail)
        by_id = encodings([block])
        for event in block.events:
            assert _event_body(event, by_id) == _event_body(event, {})
    assert decoded > 1500 and sliced > 1000  # the edits reach the slicer, not only the decoder
