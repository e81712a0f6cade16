"""Generated requests against a live node: no 5xx, and refused requests change nothing.

Hypothesis draws requests over the shapes of the client API (methods, known
and unknown paths, order ids, query parameters with odd values, JSON bodies
with odd types and sizes, raw bytes on the peer routes and PeerRPC). Each is
sent to one node process; the answer must not be a 5xx, and when it is a 4xx
the node's digest must be what it was before.
"""

from __future__ import annotations

import json
import os
import tempfile
from urllib.parse import quote

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .procs import NodeProcess

EXAMPLES = int(os.environ.get("CRDTBOOK_GENERATED", "2000"))
_state: dict = {}


@pytest.fixture(scope="module")
def live():
    with tempfile.TemporaryDirectory() as root:
        node = NodeProcess(os.path.join(root, "n"))
        trio.run(node.start)
        with httpx.Client(timeout=10) as http:
            rpc = http.get(node.url + "/status").json()["rpc"]
            _state.update(node=node, http=http, rpc=f"http://{rpc}/", counts={})
            try:
                yield _state
            finally:
                node.kill()


texts = st.one_of(st.text(max_size=20), st.sampled_from(
    ["", "0", "-1", "1.5", "1e3", "NaN", "9" * 5000, "buy", "sell", "local", "replicated",
     "all", "open", "filled", "1:a:1", "a:1", "\x00", "%", "💥" * 50, "x" * 300]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
orders = st.fixed_dictionaries({}, optional={
    "side": st.one_of(st.sampled_from(["buy", "sell"]), values),
    "qty": st.one_of(st.sampled_from(["1", "0.5", "3"]), values),
    "price": st.one_of(st.sampled_from(["10", "12.5"]), values),
    "type": st.one_of(st.sampled_from(["limit", "market", "ioc", "fok", "post_only"]), values),
    "account": st.one_of(st.sampled_from(["", "alice"]), values),
    "colour": values})
ids = st.one_of(texts, st.builds(lambda r, s: f"{r}:{s}", texts, texts))
paths = st.one_of(
    st.sampled_from(["/orders", "/book", "/fills", "/events", "/status", "/context",
                     "/evict", "/leave", "/peer/push", "/peer/pull", "/peer/join",
                     "/peer/hello", "/", "/nowhere", "/orders/", "/announce", "/lookup"]),
    st.builds(lambda i: "/orders/" + quote(i, safe=":"), ids))
queries = st.dictionaries(st.sampled_from(
    ["ack", "timeout", "depth", "limit", "after", "account", "status", "x"]), texts, max_size=3)
bodies = st.one_of(
    st.none(),
    orders.map(json.dumps), st.lists(orders, max_size=3).map(json.dumps), values.map(json.dumps),
    st.binary(max_size=300),
    st.sampled_from([b'{"side":"buy","side":"sell","qty":"1","price":"1"}',
                     b'{"qty":"1" "price"}', b"[" * 5000, b'"' + b"x" * 100_000 + b'"']))
requests = st.tuples(st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]), paths,
                     queries, bodies)
rpc_calls = st.tuples(texts, st.one_of(st.just("crdtbook:default:rpc"), texts),
                      st.one_of(values, st.fixed_dictionaries(
                          {"action": st.sampled_from(["order", "cancel", "book", "fills",
                                                      "status", "x"])},
                          optional={"id": ids, "depth": scalars, "side": values,
                                    "qty": values, "price": values, "limit": scalars,
                                    "after": scalars})))


def digest(http: httpx.Client, url: str) -> str:
    return http.get(url + "/status").json()["digest"]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(request=st.one_of(requests, rpc_calls))
def test_generated_requests_never_5xx_and_refusals_change_nothing(live, request):
    http, url, counts = live["http"], live["node"].url, live["counts"]
    before = digest(http, url)
    if len(request) == 3:  # PeerRPC
        r = http.post(live["rpc"], content=json.dumps(list(request)).encode())
        assert r.status_code == 200
        rid, error, _ = r.json()
        refused = error is not None
    else:
        method, path, query, body = request
        r = http.request(method, url + path, params=query,
                         content=body.encode() if isinstance(body, str) else body)
        assert r.status_code < 500, (method, path, query, r.text[:300])
        assert len(r.content) < 2_000_000
        refused = r.status_code >= 400
    counts["refused" if refused else "accepted"] = counts.get(
        "refused" if refused else "accepted", 0) + 1
    if refused:
        assert digest(http, url) == before, request


def test_the_generated_run_refused_most_and_took_some(live):
    counts = live["counts"]
    if sum(counts.values()) < EXAMPLES:
        pytest.skip("the generated run did not run first")
    print(f"\ngenerated requests: {counts}")
    assert counts.get("refused", 0) > EXAMPLES // 2
    assert live["node"].proc.poll() is None
