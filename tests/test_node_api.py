"""The HTTP API: happy paths, and every kind of bad input gets a 4xx and changes nothing."""

from __future__ import annotations

import json

import cbor2
import pytest

from crdtbook.context import CausalContext
from crdtbook.feedwire import decode_blocks, encode_pull

from .nodes import bearer, client, eventually, start
from .peers import SignedPeer


@pytest.fixture
async def node(nursery):
    running = await start(nursery)
    async with client() as http:
        response = await http.post(f"{running.url}/orders",
                                   json={"side": "sell", "qty": "3", "price": "12"})
        assert response.status_code == 201
    return running


async def test_orders_book_fills_events_status(node):
    url = node.url
    async with client() as http:
        r = await http.post(f"{url}/orders", json={"side": "buy", "qty": "2", "price": "13",
                                                   "account": "alice"}, headers=node.admin)
        assert r.status_code == 201  # the admin acts for any account
        body = r.json()
        assert body["order"]["status"] == "filled" and body["order"]["account"] == "alice"
        assert [(f["qty"], f["price"], f["final"]) for f in body["fills"]] == [("2", "12", False)]
        batch = await http.post(f"{url}/orders", json=[
            {"side": "buy", "qty": "1", "price": "11"},
            {"side": "sell", "qty": "5", "type": "market"},
        ])
        assert batch.status_code == 201 and len(batch.json()) == 2
        assert batch.json()[1]["order"]["price"] is None
        book = (await http.get(f"{url}/book?depth=5")).json()
        assert book["bids"] == []  # the market sell took the bid at 11
        assert book["asks"] == [{"price": "12", "qty": "1", "orders": 1}]
        assert book["events"] == 5 and len(book["digest"]) == 64  # with the founding join
        fills = (await http.get(f"{url}/fills")).json()["fills"]
        assert [f["id"] for f in fills][0].endswith(f"/{node.node.id}:2")
        events = (await http.get(f"{url}/events")).json()["events"]
        assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
        assert events[0]["kind"] == "member" and events[0]["action"] == "join"
        assert {"id", "kind", "clock", "replica", "seq", "side", "qty"} <= set(events[1])
        order = (await http.get(f"{url}/orders/{node.node.id}:2")).json()
        assert order["status"] == "open" and order["filled"] == "2" and order["resting"] == "1"
        status = (await http.get(f"{url}/status")).json()
        assert status["replica"] == node.node.id and status["events"] == 5
        assert {"book", "url", "peers", "digest", "clock", "final_clock"} <= set(status)


async def test_cancel(node):
    url, me = node.url, node.node.id
    async with client() as http:
        r = await http.delete(f"{url}/orders/{me}:2")
        assert r.status_code == 200
        assert r.json()["cancel"]["status"] == "cancelled"
        assert r.json()["cancel"]["target"] == f"{me}:2"
        assert (await http.get(f"{url}/orders/{me}:2")).json()["status"] == "cancelled"
        assert (await http.delete(f"{url}/orders/{me}:99")).status_code == 404
        # an order from another replica: 409
        other = SignedPeer("elsewhere").admitted_by(node.node)
        block = other.place("sell", "1", "20", now_ms=node.node.clock_ms() + 5)
        r = await http.post(f"{url}/peer/push", content=other.blocks([block]))
        assert r.status_code == 204
        r = await http.delete(f"{url}/orders/{other.id}:1")
        assert r.status_code == 409 and r.json()["error"] == "not_local"


def _big() -> bytes:
    return b'{"side":"buy","qty":"1","price":"1","account":"' + b"x" * (5 * 1024 * 1024) + b'"}'


BAD = [
    ("POST", "/orders", b"{not json", 400, "bad_json"),
    ("POST", "/orders", b"", 400, "bad_json"),
    ("POST", "/orders", b"[]", 400, "bad_order"),
    ("POST", "/orders", b'"sell"', 400, "bad_order"),
    ("POST", "/orders", b'{"side":"buy","qty":1.5,"price":"1"}', 400, "bad_number"),
    ("POST", "/orders", b'{"side":"buy","qty":"1","price":12.5}', 400, "bad_number"),
    ("POST", "/orders", b'{"side":"buy","qty":3,"price":"12"}', 400, "bad_amount"),
    ("POST", "/orders", b'{"side":"buy","qty":"NaN","price":"1"}', 400, "bad_amount"),
    ("POST", "/orders", b'{"side":"buy","qty":NaN,"price":"1"}', 400, "bad_number"),
    ("POST", "/orders", b'{"side":"buy","qty":"-1","price":"1"}', 400, "bad_amount"),
    ("POST", "/orders", b'{"side":"buy","qty":"0","price":"1"}', 400, "bad_amount"),
    ("POST", "/orders", b'{"side":"buy","qty":"1e3","price":"1"}', 400, "bad_amount"),
    ("POST", "/orders", b'{"side":"buy","qty":"1","price":"10000000000000"}', 400, "bad_amount"),
    ("POST", "/orders", b'{"side":"hold","qty":"1","price":"1"}', 400, "bad_order"),
    ("POST", "/orders", b'{"side":"buy","qty":"1","price":"1","type":"stop"}', 400, "bad_order"),
    ("POST", "/orders", b'{"side":"buy","qty":"1","price":"1","colour":"red"}', 400, "bad_order"),
    ("POST", "/orders", b'{"side":"buy","qty":"1"}', 400, "bad_order"),
    ("POST", "/orders", b'{"side":"buy","price":"1"}', 400, "bad_order"),
    ("POST", "/orders", b'{"side":"buy","qty":"1","price":"1","type":"market"}', 400,
     "bad_order"),
    ("POST", "/orders", b'{"side":"buy","qty":"1","price":"1","account":7}', 400, "bad_order"),
    ("POST", "/orders", b'[{"side":"buy","qty":"1","price":"1"},{"side":"x"}]', 400,
     "bad_order"),
    ("POST", "/orders", _big(), 413, "too_large"),
    ("PUT", "/orders", b"", 405, "method_not_allowed"),
    ("GET", "/orders?limit=0", b"", 400, "bad_limit"),
    ("GET", "/fills?after=x", b"", 400, "bad_cursor"),
    ("GET", "/events?after=1:n:x", b"", 400, "bad_cursor"),
    ("GET", "/orders?status=done", b"", 400, "bad_status"),
    ("POST", "/orders?ack=maybe", b"{}", 400, "bad_ack"),
    ("POST", "/orders?ack=replicated&timeout=%D9%A3", b"{}", 400, "bad_timeout"),
    ("POST", "/orders?timeout=", b"{}", 400, "bad_timeout"),
    ("POST", "/orders?timeout=1_0", b"{}", 400, "bad_timeout"),
    ("POST", "/leave?timeout=%20", b"", 401, "unauthorized"),  # the token comes first
    ("GET", "/fills?limit=", b"", 400, "bad_limit"),
    ("PUT", "/book", b"", 405, "method_not_allowed"),
    ("GET", "/nowhere", b"", 404, "not_found"),
    ("GET", "/orders/nonsense", b"", 400, "bad_id"),
    ("GET", "/orders/x:1", b"", 404, "not_found"),
    ("DELETE", "/orders/x:0", b"", 400, "bad_id"),
    ("GET", "/book?depth=0", b"", 400, "bad_query"),
    ("GET", "/book?depth=abc", b"", 400, "bad_query"),
    ("POST", "/peer/push", b"\xff\x00garbage", 400, "bad_blocks"),
    ("POST", "/peer/push", cbor2.dumps({"v": 9, "kind": "blocks"}), 400, "bad_blocks"),
    ("POST", "/peer/push", cbor2.dumps({"v": 1, "kind": "blocks", "blocks": [
        ["x", 1, cbor2.dumps([[0, "x", 1, 5, 0, 0, 1.5, 1, ""]]), bytes(64)]]}), 400,
     "bad_blocks"),
    ("POST", "/peer/pull", b"", 400, "bad_pull"),
    ("POST", "/peer/pull", cbor2.dumps({"v": 1, "kind": "pull", "context": [["x", -1, []]]}),
     400, "bad_pull"),
    # bounded while read: every one of these is refused early, and says so briefly
    ("GET", "/orders/a:" + "9" * 5000, b"", 400, "bad_id"),
    ("DELETE", "/orders/a:" + "9" * 5000, b"", 400, "bad_id"),
    ("GET", "/book?depth=" + "9" * 5000, b"", 400, "bad_query"),
    ("GET", "/fills?after=" + "9" * 5000, b"", 400, "bad_cursor"),
    ("GET", "/fills?limit=" + "9" * 5000, b"", 400, "bad_limit"),
    ("GET", "/events?after=" + "9" * 5000 + ":a:1", b"", 400, "bad_cursor"),
    ("POST", "/orders", b'{"side":"buy","side":"sell","qty":"1","price":"1"}', 400, "bad_json"),
    ("POST", "/orders", b'[{"qty":"1","qty":"2","side":"buy","price":"1"}]', 400, "bad_json"),
    ("POST", "/orders", b'{"side":"buy","qty":"' + b"7" * 3_000_000 + b'","price":"1"}', 400,
     "bad_amount"),
    ("POST", "/orders", b'{"side":"buy","qty":"1","price":"1","' + b"k" * 3_000_000 + b'":1}',
     400, "bad_order"),
    ("POST", "/peer/push", cbor2.dumps({"v": 1, "kind": "x" * 3_000_000}), 400, "bad_blocks"),
    ("POST", "/peer/push", b"\xa3\x61v\x01\x64kind\x66blocks\x66blocks\x9a\x00\x20\x00\x00"
     + b"\x80" * (2 << 20), 400, "bad_blocks"),  # 2M empty arrays: over the item cap
    ("POST", "/peer/push", cbor2.dumps({"v": 1, "kind": "blocks", "blocks": [],
                                        "claims": cbor2.CBORTag(35, "a+")}), 400, "bad_blocks"),
    ("POST", "/peer/push", cbor2.dumps({"v": 1, "kind": "blocks", "blocks": [],
                                        "claims": {1, 2}}), 400, "bad_blocks"),  # a set
    ("POST", "/peer/push", b"\xa3\x61v\x01\x64kind\x66blocks\x66blocks\xd8\x1c\x80", 400,
     "bad_blocks"),  # a shareable value (tag 28)
    ("POST", "/peer/push", b"\xbf\x61v\x01\xff", 400, "bad_blocks"),  # indefinite length
    ("POST", "/peer/push", b"\x81" * 100 + b"\x80", 400, "bad_blocks"),  # nested 100 deep
    ("POST", "/peer/pull", encode_pull(CausalContext()), 403, "not_a_member"),
    ("POST", "/peer/join", cbor2.dumps({"v": 1, "kind": "join", "book": cbor2.CBORTag(258, [1]),
                                        "replica": "x", "key": b"", "token": None, "time": 0,
                                        "sig": b""}), 400, "bad_join"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), BAD,
                         ids=[f"{m} {p} {s} {e} {i}" for i, (m, p, _, s, e) in enumerate(BAD)])
async def test_bad_input_is_refused_and_changes_nothing(node, method, path, body, status, error):
    before = node.node.replica.digest()
    async with client() as http:
        r = await http.request(method, f"{node.url}{path}", content=body)
    assert r.status_code == status, r.text[:300]
    data = r.json()
    assert data["error"] == error and data["detail"]
    assert len(r.content) < 1024  # nothing sent is echoed back whole
    assert node.node.replica.digest() == before


async def test_forged_own_events_refused(node):
    forger = SignedPeer("forger")  # speaks for the node's own id with the wrong key
    me = node.node.id
    await node.node.journal.sync()  # own events sealed: the forgery follows the real tip
    forged_block = forger.forge(me, node.node.door.tips[me], node.node.clock_ms())
    before = node.node.replica.digest()
    async with client() as http:
        r = await http.post(f"{node.url}/peer/push", content=forger.blocks([forged_block]))
    assert r.status_code == 400 and "signature" in r.json()["detail"]
    assert node.node.replica.digest() == before
    assert node.node.conflict is None  # a refused message leaves no trace


async def test_wrong_book_refused(node):
    async with client() as http:
        r = await http.post(f"{node.url}/peer/pull", content=encode_pull(CausalContext()),
                            headers={"x-crdtbook-book": "other"})
    assert r.status_code == 409 and r.json()["error"] == "wrong_book"


async def test_pull_answers_exactly_what_is_missing(node):
    async with client() as http:
        fresh = SignedPeer("fresh").admitted_by(node.node)  # a member: its pull is signed
        body = fresh.pull()
        r = await http.post(f"{node.url}/peer/pull", content=body, headers=fresh.signed(body))
        assert r.status_code == 200 and r.headers["content-type"] == "application/cbor"
        blocks, claims = decode_blocks(r.content)
        admission = fresh.door.admit(blocks, claims)
        assert admission.added == node.node.replica.events_total() and not admission.skipped
        assert fresh.replica.digest() == node.node.replica.digest()
        body = fresh.pull()
        r = await http.post(f"{node.url}/peer/pull", content=body, headers=fresh.signed(body))
        assert decode_blocks(r.content)[0] == []


async def test_registry_api_is_grape_compatible(node):
    url = node.url
    async with client() as http:
        r = await http.post(f"{url}/announce", json={"data": ["svc:test", 4321]})
        assert r.status_code == 200 and r.json() == 1
        r = await http.post(f"{url}/lookup", json={"data": "svc:test"})
        assert r.json() == ["127.0.0.1:4321"]
        assert (await http.post(f"{url}/lookup", json={"data": "none"})).json() == []
        for body, code in [({"data": ["k", "80"]}, "ERR_GRAPE_SERVICE_PORT"),
                           ({"data": ["k", 70000]}, "ERR_GRAPE_SERVICE_PORT"),
                           ({"data": ["k", 1.5]}, "ERR_GRAPE_SERVICE_PORT"),
                           ({"data": "k"}, "ERR_GRAPE_ANNOUNCE")]:
            r = await http.post(f"{url}/announce", json=body)
            assert r.status_code == 200 and r.json() == code
        r = await http.post(f"{url}/lookup", json={"data": ""})
        assert r.json() == "ERR_GRAPE_LOOKUP"
        r = await http.post(f"{url}/lookup", content=b"garbage")
        assert r.json() == "ERR_GRAPE_LOOKUP"
        # the node announces itself under crdtbook:<book>
        mine = node.url.split("://")[1]
        await eventually(lambda: mine in node.node.registry.lookup("crdtbook:default",
                                                                   node.node.monotonic()))


async def test_json_errors_for_every_unknown_route(node):
    async with client() as http:
        for path in ("/nope", "/orders/a:1/extra", "/peer", "/announce/", "/static/nope"):
            r = await http.get(f"{node.url}{path}")
            assert 400 <= r.status_code < 500
            json.loads(r.text)


async def test_far_future_events_are_left_out_until_their_time(node):
    now_ms = node.node.clock_ms()
    peer = SignedPeer("peer").admitted_by(node.node)
    other = SignedPeer("other").admitted_by(node.node)
    soon = peer.place("buy", "1", "1", now_ms + 1_000)
    later = other.place("buy", "1", "1", now_ms + 3_600_000)
    async with client() as http:
        r = await http.post(f"{node.url}/peer/push", content=peer.blocks([soon, later]))
    assert r.status_code == 204
    held = {str(e.dot) for e in node.node.replica.events()}
    assert f"{peer.id}:1" in held and f"{other.id}:1" not in held
    assert node.node.replica.clock.last < (now_ms + 60_000) << 16


async def test_headers_over_the_limit_are_refused(node):
    async with client() as http:
        r = await http.get(f"{node.url}/status", headers={"x-big": "y" * 20_000})
        assert r.status_code in (400, 413, 431)
        assert (await http.get(f"{node.url}/status")).status_code == 200


async def test_pulls_are_rate_limited_per_caller(node):
    peer = SignedPeer("puller").admitted_by(node.node)
    statuses = []
    async with client() as http:
        for _ in range(60):
            body = peer.pull()
            r = await http.post(f"{node.url}/peer/pull", content=body, headers=peer.signed(body))
            statuses.append(r.status_code)
    assert statuses[:30] == [200] * 30  # a burst of 40 is allowed, refilled at 20 a second
    assert 429 in statuses
    assert set(statuses) <= {200, 429}


async def test_a_pull_answer_is_bounded_across_origins(node, monkeypatch):
    from node.cluster import peerapi
    monkeypatch.setattr(peerapi, "PULL_BYTES", 1)  # one block per answer, whatever the origin
    peers = [SignedPeer(f"origin{i}").admitted_by(node.node) for i in range(3)]
    async with client() as http:
        for p in peers:
            block = p.place("buy", "1", "1", now_ms=node.node.clock_ms() + 5)
            assert (await http.post(f"{node.url}/peer/push", content=p.blocks([block]))
                    ).status_code == 204
        reader = SignedPeer("reader").admitted_by(node.node)
        pages = 0
        while True:
            body = reader.pull()
            r = await http.post(f"{node.url}/peer/pull", content=body,
                                headers=reader.signed(body))
            assert r.status_code == 200, r.text[:300]
            blocks, claims = decode_blocks(r.content)
            assert len(blocks) <= 1
            reader.door.admit(blocks, claims)
            pages += 1
            if r.headers.get("x-crdtbook-more") != "1":
                break
    assert pages >= 4 and reader.replica.digest() == node.node.replica.digest()


async def test_an_answer_before_the_body_closes_the_connection(nursery):
    """A refusal sent before the body was read (401, 404, 405) says `connection:
    close`: the node ends that connection, and a keep-alive client that sent its next
    request on it saw it closed without an answer (tests/test_generated_requests.py
    met it now and then)."""
    node = await start(nursery)
    async with client(local_token=False) as http:
        for method, path in (("POST", "/orders"), ("PATCH", "/peer/push"), ("PUT", "/nope")):
            refused = await http.request(method, node.url + path, content=b'{"a": 1}')
            assert refused.status_code in (401, 404, 405)
            assert refused.headers["connection"] == "close"
            assert (await http.get(node.url + "/status")).status_code == 200
        # a request whose body was read, or that had none, keeps its connection
        read = await http.post(node.url + "/orders", headers={"Authorization": "Bearer x"})
        assert read.status_code == 401 and "connection" not in read.headers
        placed = await http.post(node.url + "/orders", headers=bearer(node.token),
                                 json={"side": "buy", "qty": "1", "price": "1"})
        assert placed.status_code == 201 and "connection" not in placed.headers
