"""GET /metrics: Prometheus text that moves as the node works.

Each test scrapes a live node (or two), does something, scrapes again and
checks that exactly the figures that must move did, parsing the text with
prometheus_client's own parser.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from crdtbook.replica import Replica

from .helpers import assert_matches_reference
from .nodes import bearer, client, eventually, start


async def scrape(http, url: str) -> dict:
    """{(sample name, sorted labels): value} of one scrape (sent without a token)."""
    response = await http.get(f"{url}/metrics", headers={"Authorization": "none"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_orders_cancels_fills_and_refusals(nursery, tmp_path):
    node = await start(nursery, data_dir=str(tmp_path / "a"))  # each answer waits for a commit
    url, me = node.url, node.node.id
    async with client() as http:
        before = await scrape(http, url)
        sell = await http.post(f"{url}/orders", json={"side": "sell", "qty": "3", "price": "12"})
        assert sell.status_code == 201
        buy = await http.post(f"{url}/orders", json=[
            {"side": "buy", "qty": "2", "price": "13"},
            {"side": "buy", "qty": "1", "price": "12", "type": "post_only"}])  # would trade
        assert buy.status_code == 201
        assert buy.json()[1]["order"]["status"] == "rejected"
        assert (await http.delete(f"{url}/orders/{me}:2")).status_code == 200  # the rest of 3@12
        # refusals: each one a 4xx that the counters name by its error code
        bad = await http.post(f"{url}/orders", json={"side": "buy", "qty": "-1", "price": "1"})
        assert bad.json()["error"] == "bad_amount"
        anonymous = await http.post(f"{url}/orders", headers={"Authorization": "Bearer nope"},
                                    json={"side": "buy", "qty": "1", "price": "1"})
        assert anonymous.status_code == 401
        again = await http.delete(f"{url}/orders/{me}:2")
        assert again.json()["error"] == "cannot_cancel"
        missing = await http.delete(f"{url}/orders/{me}:999")
        assert missing.status_code == 404
        assert (await http.get(f"{url}/orders/{me}:999")).status_code == 404  # a read
        after = await scrape(http, url)

    assert moved(before, after, "crdtbook_orders_accepted_total") == 3
    assert moved(before, after, "crdtbook_orders_rejected_total", reason="post_only") == 1
    assert moved(before, after, "crdtbook_fills_total") == 1
    assert moved(before, after, "crdtbook_fill_quantity_total") == 2  # 2@12 traded
    assert moved(before, after, "crdtbook_cancels_accepted_total") == 1
    assert moved(before, after, "crdtbook_orders_refused_total", reason="bad_amount") == 1
    assert moved(before, after, "crdtbook_orders_refused_total", reason="unauthorized") == 1
    assert moved(before, after, "crdtbook_cancels_refused_total", reason="cannot_cancel") == 1
    assert moved(before, after, "crdtbook_cancels_refused_total", reason="not_found") == 1
    # 3 orders and a cancel are events; the cancel and the orders were committed
    assert moved(before, after, "crdtbook_events_held") == 4
    assert moved(before, after, "crdtbook_events_total") == 4
    assert moved(before, after, "crdtbook_store_commit_seconds_count") >= 3
    assert value(after, "crdtbook_members") == 1
    assert value(after, "crdtbook_peers") == 0
    assert value(after, "crdtbook_store_failed") == 0
    # a read's 404 is no refused order
    assert moved(before, after, "crdtbook_orders_refused_total", reason="not_found") == 0


async def test_peerrpc_refusals_count_too(nursery):
    node = await start(nursery)
    async with client() as http:
        before = await scrape(http, node.url)
        body = json.dumps(["r", "crdtbook:default:rpc",
                           {"action": "order", "side": "buy", "qty": "1", "price": "1"}])
        reply = await http.post(f"http://127.0.0.1:{node.node.rpc_port}/", content=body)
        assert reply.json()[1].startswith("ERR_UNAUTHORIZED:")  # no token in the payload
        body = json.dumps(["r", "crdtbook:default:rpc", {"action": "order", "side": "buy",
                                                         "qty": "1", "price": "1",
                                                         "token": node.token}])
        reply = await http.post(f"http://127.0.0.1:{node.node.rpc_port}/", content=body)
        assert reply.json()[1] is None
        after = await scrape(http, node.url)
    assert moved(before, after, "crdtbook_orders_refused_total", reason="unauthorized") == 1
    assert moved(before, after, "crdtbook_orders_accepted_total") == 1


async def test_metrics_are_public_and_per_node(nursery):
    a = await start(nursery)
    b = await start(nursery)  # another cluster, same process: its own registry
    async with client(local_token=False) as http:
        r = await http.get(f"{a.url}/metrics")
        assert r.status_code == 200 and "crdtbook_orders_accepted_total" in r.text
        placed = await http.post(f"{a.url}/orders", headers=bearer(a.token),
                                 json={"side": "sell", "qty": "1", "price": "5"})
        assert placed.status_code == 201
        assert value(await scrape(http, a.url), "crdtbook_orders_accepted_total") == 1
        assert value(await scrape(http, b.url), "crdtbook_orders_accepted_total") == 0


async def test_two_nodes_peer_latencies_bytes_and_health(nursery):
    a = await start(nursery)
    # b goes down without leaving (a leave would make a forget it, maybe before any
    # call to it failed, and the test is about a peer that is down)
    b = await start(nursery, a.url, leave_on_stop=False)
    async with client() as http:
        placed = await http.post(f"{a.url}/orders", json={"side": "sell", "qty": "1",
                                                         "price": "7"})
        assert placed.status_code == 201
        await eventually(lambda: b.node.replica.event_count() == a.node.replica.event_count())

        async def exchanged():
            samples = await scrape(http, a.url)
            pushes = value(samples, "crdtbook_peer_push_seconds_count", peer=b.url)
            pulls = value(samples, "crdtbook_peer_pull_seconds_count", peer=b.url)
            return samples if pushes >= 1 and pulls >= 1 else None

        samples = await eventually(exchanged)
        assert value(samples, "crdtbook_peer_push_seconds_bucket", peer=b.url, le="+Inf") \
            == value(samples, "crdtbook_peer_push_seconds_count", peer=b.url)
        assert value(samples, "crdtbook_peer_pull_seconds_sum", peer=b.url) > 0
        assert value(samples, "crdtbook_peer_wire_bytes_total", direction="sent") > 0
        assert value(samples, "crdtbook_peer_wire_bytes_total", direction="received") > 0
        assert value(samples, "crdtbook_peer_up", peer=b.url) == 1
        assert value(samples, "crdtbook_peer_info", peer=b.url, replica=b.node.id) == 1
        assert value(samples, "crdtbook_peers") == 1 and value(samples, "crdtbook_members") == 2
        # b served a's pushes and pulls: bytes it received and sent count there too
        served = await scrape(http, b.url)
        assert value(served, "crdtbook_peer_wire_bytes_total", direction="received") > 0
        assert "crdtbook_final_lag_seconds" in {name for name, _ in served}

        await b.stop()

        async def down():
            samples = await scrape(http, a.url)
            # a push may meet the stopped peer first, and its backoff then delays pulls
            failed = sum(value(samples, "crdtbook_peer_calls_failed_total", peer=b.url,
                               call=call) for call in ("pull", "push"))
            return samples if failed >= 1 and not value(samples, "crdtbook_peer_up",
                                                        peer=b.url) else None

        samples = await eventually(down)
        assert value(samples, "crdtbook_peer_failures", peer=b.url) >= 1
        # a forgotten peer leaves no series behind (peers churn; labels must not pile up)
        a.node.forget_peer(b.url, "test")
        gone = await scrape(http, a.url)
        assert not [key for key in gone if ("peer", b.url) in key[1]]
        assert value(gone, "crdtbook_peers") == 0


async def test_scrape_time_figures_follow_the_node(nursery):
    node = await start(nursery)

    class Hub:
        def subscription_count(self) -> int:
            return 3

    async with client() as http:
        samples = await scrape(http, node.url)
        assert value(samples, "crdtbook_ws_subscriptions") == 0  # no stream hub: none open
        node.node.streams = Hub()
        node.node.door.refused["at or below the final frontier"] += 2
        node.node.door.refused["a reason? (not a code)"] += 1
        node.node.replica.engine.rewinds += 5
        samples = await scrape(http, node.url)
    assert value(samples, "crdtbook_ws_subscriptions") == 3
    assert value(samples, "crdtbook_door_refused_total",
                 reason="at_or_below_the_final_frontier") == 2
    assert value(samples, "crdtbook_door_refused_total", reason="other") == 1
    assert value(samples, "crdtbook_rewinds_total") == 5


def test_engine_counts_rewinds_and_replayed_events():
    alpha, bravo = Replica("alpha"), Replica("bravo")
    early = alpha.place("sell", "1", "9", now_ms=1_000)
    for i in range(3):
        assert not bravo.place("buy", "1", "9", now_ms=2_000 + i).fills
    engine = bravo.engine
    assert (engine.rewinds, engine.replayed) == (0, 0)
    bravo.merge(early.delta)  # sorts before bravo's three orders: undo them, apply, replay
    assert (engine.rewinds, engine.replayed) == (1, 3)
    assert len(bravo.fills()) == 1  # the first buy, replayed, took the earlier sell
    assert_matches_reference(bravo)
    engine.reset()  # a rebuild starts the book over, not the cost counters
    assert (engine.rewinds, engine.replayed) == (1, 3)


async def test_the_largest_trade_is_stored_and_counted(nursery):
    """A fill of 10^12 (10^20 units, past SQLite's 64-bit integers) once failed the
    store at compaction, on every node that held it (found by schemathesis)."""
    node = await start(nursery, compact_interval_s=0.05)
    async with client() as http:
        for side in ("sell", "buy"):
            placed = await http.post(f"{node.url}/orders", json={
                "side": side, "qty": "1000000000000", "price": "1000000000000"})
            assert placed.status_code == 201

        async def stored():
            fills = (await http.get(f"{node.url}/fills")).json()["fills"]
            return node.node.store.fill_count() == 1 and fills

        fills = await eventually(stored)
        assert [(f["qty"], f["price"], f["final"]) for f in fills] == [
            ("1000000000000", "1000000000000", True)]
        assert node.node.journal.failed is None
        samples = await scrape(http, node.url)
        assert value(samples, "crdtbook_fill_quantity_total") == 10**12
        assert value(samples, "crdtbook_store_failed") == 0
        # and the node still takes orders
        placed = await http.post(f"{node.url}/orders", json={"side": "sell", "qty": "1",
                                                             "price": "2"})
        assert placed.status_code == 201
