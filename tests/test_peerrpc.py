"""Grenache PeerRPC transport on a node, spoken the way grenache-nodejs-http does."""

from __future__ import annotations

import gzip
import json

import pytest

from .nodes import client, eventually, start

KEY = "crdtbook:default:rpc"


@pytest.fixture
async def node(nursery):
    return await start(nursery)


async def rpc(node, body: bytes, gzipped: bool = False, token: bool = True):
    """Send ``body``; a payload without a ``token`` gets the node's default account's
    (``token=False``: it goes as it is)."""
    headers = {"content-type": "text/plain;charset=UTF-8",
               "grc-compress": "gzip" if gzipped else "none"}
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    if token and isinstance(message, list) and len(message) == 3 \
            and isinstance(message[2], dict) and "token" not in message[2]:
        body = call(message[0], {**message[2], "token": node.token}, message[1])
    if gzipped:
        body = gzip.compress(body)
    async with client() as http:
        r = await http.post(f"http://127.0.0.1:{node.node.rpc_port}/", content=body,
                            headers=headers)
    assert r.status_code == 200  # errors travel in the reply, never as a status
    content = gzip.decompress(r.content) if gzipped else r.content
    assert "content-encoding" not in r.headers
    return json.loads(content)


def call(rid: str, payload, key: str = KEY) -> bytes:
    return json.dumps([rid, key, payload]).encode()


async def test_order_book_fills_status_cancel(node):
    rid, err, sold = await rpc(node, call("r-1", {"action": "order", "side": "sell", "qty": "3",
                                                  "price": "12"}))
    assert (rid, err) == ("r-1", None) and sold["order"]["status"] == "open"
    rid, err, bought = await rpc(node, call("r-2", {"action": "order", "side": "buy",
                                                    "qty": "2", "price": "13"}))
    assert err is None and [(f["qty"], f["price"]) for f in bought["fills"]] == [("2", "12")]
    _, err, book = await rpc(node, call("r-3", {"action": "book", "depth": 5}))
    assert err is None and book["asks"] == [{"price": "12", "qty": "1", "orders": 1}]
    _, err, fills = await rpc(node, call("r-4", {"action": "fills"}))
    assert err is None and len(fills["fills"]) == 1
    _, err, status = await rpc(node, call("r-5", {"action": "status"}))
    assert err is None and status["replica"] == node.node.id
    _, err, cancelled = await rpc(node, call("r-6", {"action": "cancel",
                                                     "id": sold["order"]["id"]}))
    assert err is None and cancelled["cancel"]["status"] == "cancelled"


async def test_gzip_both_ways(node):
    rid, err, result = await rpc(node, call("g-1", {"action": "status"}), gzipped=True)
    assert (rid, err) == ("g-1", None) and result["book"] == "default"


@pytest.mark.parametrize(
    ("body", "rid", "code"),
    [
        (b"not json", None, "ERR_REQUEST"),
        (b'["only", "two"]', None, "ERR_REQUEST"),
        (call("x-1", {"action": "order", "side": "buy", "qty": 1.5, "price": "1"}), "x-1",
         "ERR_BAD_AMOUNT"),
        (call("x-2", {"action": "order", "side": "buy", "qty": "1"}), "x-2", "ERR_BAD_ORDER"),
        (call("x-3", {"action": "fly"}), "x-3", "ERR_BAD_ACTION"),
        (call("x-4", "order"), "x-4", "ERR_BAD_ACTION"),
        (call("x-5", {"action": "cancel", "id": "nope"}), "x-5", "ERR_BAD_ID"),
        (call("x-6", {"action": "cancel", "id": "zz:9"}), "x-6", "ERR_NOT_FOUND"),
        (call("x-7", {"action": "book", "depth": 0}), "x-7", "ERR_BAD_BOOK"),
        (call("x-8", {"action": "status"}, key="other:key"), "x-8", "ERR_SERVICE_NOT_FOUND"),
    ],
)
async def test_bad_requests_get_an_error_reply_and_change_nothing(node, body, rid, code):
    before = node.node.replica.digest()
    got_rid, err, result = await rpc(node, body)
    assert got_rid == rid and result is None
    assert err.split(":", 1)[0] == code
    assert node.node.replica.digest() == before


async def test_rpc_port_is_announced_under_the_rpc_key(node):
    key = "crdtbook:default:rpc"
    await eventually(lambda: f"127.0.0.1:{node.node.rpc_port}" in
                     node.node.registry.lookup(key, node.node.monotonic()))
