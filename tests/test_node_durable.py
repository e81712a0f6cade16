"""Durable node behaviour in process: restart, write concern, unreachable peers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from node.cluster import gossip
from node.server import serve_node
from node.service import NodeConfig
from node.store.sqlite import StoreError

from .nodes import DATA_DIRS, admin_headers, client, converged, eventually, start


async def test_restart_on_its_data_directory_is_the_same_replica(nursery, tmp_path):
    data = str(tmp_path / "a")
    a = await start(nursery, data_dir=data)
    b = await start(nursery, a.url)
    async with client() as http:
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "3", "price": "12"})
        assert r.status_code == 201
        first = r.json()["order"]["id"]
    replica = a.node.id
    await a.stop()
    assert replica in b.node.replica.members()  # a graceful stop is not a leave
    a = await start(nursery, b.url, data_dir=data)
    assert a.node.id == replica
    async with client() as http:
        assert (await http.get(f"{a.url}/orders/{first}")).json()["resting"] == "3"
        r = await http.post(a.url + "/orders", json={"side": "buy", "qty": "1", "price": "12"})
        seq = int(first.rsplit(":", 1)[1])
        assert r.json()["order"]["id"] == f"{replica}:{seq + 1}"  # its seq continues
    await eventually(lambda: converged(a, b, events=2))


async def test_ack_replicated_waits_for_a_peer_and_says_when_it_did_not(nursery):
    a = await start(nursery)
    b = await start(nursery, a.url)
    c = await start(nursery, a.url)
    await eventually(lambda: len(a.node.replica.members()) == 3)
    order = {"side": "sell", "qty": "1", "price": "50"}
    async with client() as http:
        r = await http.post(a.url + "/orders?ack=replicated&timeout=5", json=order)
        assert r.status_code == 201 and r.json()["replicated"] is True
        dot = r.json()["order"]["id"]
        assert b.node.replica.order(dot) or c.node.replica.order(dot)
        r = await http.post(a.url + "/orders?ack=all&timeout=5", json=order)
        assert r.status_code == 201 and r.json()["replicated"] is True
        dot = r.json()["order"]["id"]
        assert b.node.replica.order(dot) and c.node.replica.order(dot)
        await b.stop()
        await c.stop()
        r = await http.post(a.url + "/orders?ack=replicated&timeout=0.5", json=order)
        assert r.status_code == 202 and r.json()["replicated"] is False
        dot = r.json()["order"]["id"]
        assert a.node.replica.order(dot).status == "open"  # the order stands


async def test_an_unreachable_peer_is_shown_not_waited_on_in_silence(nursery):
    config = NodeConfig(host="127.0.0.1", port=0, peers=["http://127.0.0.1:9"],
                        pull_interval_s=0.2, request_timeout_s=0.5, compact_interval_s=None)
    node = await nursery.start(lambda task_status: serve_node(config, task_status=task_status))

    def failing():
        peers = node.status()["peers"]
        return peers and peers[0]["failing_s"] is not None and peers[0]["error"]

    await eventually(failing)
    assert not node.joined  # it never founds a cluster of its own behind a dead --peer
    nursery.cancel_scope.cancel()


async def test_status_names_the_member_that_holds_finality_back(nursery, tmp_path):
    a = await start(nursery)
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))  # durable: stop != leave
    await eventually(lambda: len(a.node.replica.members()) == 2)
    gone = b.node.id
    await b.stop()  # stopped, not left: it still counts, and F waits for it

    def held_back():
        holder = a.node.status()["held_back_by"]
        return holder and holder["replica"] == gone and holder["behind_ms"] > 300

    await eventually(held_back)
    assert gone in a.node.status()["members"]


@pytest.mark.parametrize("step", ["stage", "commit"])
async def test_a_failed_store_acknowledges_and_sends_nothing(nursery, tmp_path, step):
    # durable: its 201 waits for the commit (an ephemeral node's does not, see
    # tests/test_ephemeral_entry.py: it refuses once its journal has failed)
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url)
    await eventually(lambda: len(b.node.replica.members()) == 2)
    roll_back = a.node.store._rolled_back

    def disk_full(*_):  # the rows could not be written, or the commit failed (rolled back)
        if step == "commit":
            roll_back()
        raise StoreError("writing to the store failed: database or disk is full")

    setattr(a.node.store, step, disk_full)
    async with client() as http:
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "1", "price": "9"})
        assert r.status_code == 503 and r.json()["error"] == "store_failed"
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "1", "price": "9"})
        assert r.status_code == 503 and r.json()["error"] == "store_failed"  # refused up front
        r = await http.post(a.url + "/peer/pull", content=b"\xa1av\x01", headers={
            "content-type": "application/cbor"})
        assert r.status_code in (400, 503)
        status = (await http.get(a.url + "/status")).json()
        assert "disk is full" in status["store"]["failed"]
    # what was never durable at a never reaches b: a pull from a is refused
    peer = b.node.peers[a.url]
    assert await gossip.pull_one(b.node, b.node.client, peer) is None
    assert all(e.kind == "member" for e in b.node.replica.events())


async def test_fill_pages_have_no_gap_when_compaction_commits_during_a_read(nursery):
    from node.api import history

    a = await start(nursery)
    node = a.node

    def trade(n):
        for _ in range(n):
            node.replica.place("sell", "1", "10", now_ms=node.clock_ms())
            node.replica.place("buy", "1", "10", now_ms=node.clock_ms())
        node._journal_fresh()

    trade(20)
    await gossip.compact_once(node)  # fills 0..19 go to the store
    trade(20)  # fills 20..39 in memory, final
    read = node.journal.read

    async def read_while_compacting(method, *args):
        await gossip.compact_once(node)  # 20..39 leave memory while the store is read
        return await read(method, *args)

    node.journal.read = read_while_compacting
    page, cursor = await history.fills_page(node, 4, 100, None)
    assert [f.index for f, _ in page] == list(range(5, 40))
    assert cursor is None


async def test_a_restarted_node_whose_store_lost_events_takes_no_order(nursery, tmp_path):
    import sqlite3

    data = str(tmp_path / "a")
    a = await start(nursery, data_dir=data)
    b = await start(nursery, a.url)
    async with client() as http:
        for _ in range(5):
            r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "1",
                                                         "price": "7"})
            assert r.status_code == 201
        last = r.json()["order"]["id"]
        await eventually(lambda: b.node.replica.order(last) is not None)
        replica, seq = a.node.id, int(last.rsplit(":", 1)[1])
        await a.stop()
        # what a lost WAL does: the newest acknowledged events are gone from the store
        with sqlite3.connect(f"{data}/store.sqlite") as db:
            db.execute("DELETE FROM snapshot")
            db.execute("DELETE FROM events WHERE seq > ? AND rid = "
                       "(SELECT id FROM names WHERE name = ?)", (seq - 2, replica))
            db.execute("DELETE FROM blocks WHERE last > ? AND rid = "  # one block per order
                       "(SELECT id FROM names WHERE name = ?)", (seq - 2, replica))
        a = await start_unready(nursery, b.url, data_dir=data)
        assert a.node.id == replica
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "1", "price": "7"})
        assert r.status_code == 503  # catching up, then in conflict: never a reused seq
        await eventually(lambda: a.node.conflict is not None)
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "1", "price": "7"})
        assert r.status_code == 503 and r.json()["error"] == "conflict"
        assert b.node.replica.order(last).qty > 0  # b's copy stands


async def start_unready(nursery, *peers, **settings):
    """A node started without waiting for it to be ready to trade."""
    config = NodeConfig(host="127.0.0.1", port=0, peers=list(peers), pull_interval_s=0.2,
                        request_timeout_s=1.0, compact_interval_s=None, **settings)
    node = await nursery.start(lambda task_status: serve_node(config, task_status=task_status))
    DATA_DIRS[node.url] = node.store.directory  # client() sends its default account's token
    return SimpleNamespace(node=node, url=node.url)


async def test_a_restarted_node_whose_peers_are_all_gone_can_evict_them(nursery, tmp_path):
    data = str(tmp_path / "a")
    a = await start(nursery, data_dir=data)
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    await eventually(lambda: len(a.node.replica.members()) == 2)
    gone = b.node.id
    await b.stop()
    await a.stop()
    a = await start_unready(nursery, data_dir=data)  # b never comes back
    async with client() as http:
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "1", "price": "7"})
        assert r.json()["error"] == "catching_up"
        r = await http.post(a.url + "/evict", json={"replica": gone}, timeout=30,
                            headers=admin_headers(data))
        assert r.json()["error"] == "catching_up"  # not without force
        r = await http.post(a.url + "/evict", json={"replica": gone, "force": True},
                            timeout=30, headers=admin_headers(data))
        assert r.status_code == 200, r.text
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "1", "price": "7"})
        assert r.status_code == 201  # alone now: nobody left to catch up with


async def test_an_own_claim_never_promises_past_the_durable_clock_lease(nursery):
    a = await start(nursery)
    node = a.node
    node.replica.clock.observe(node.lease + (10_000 << 16))  # a peer's clock, 10 s ahead
    own = next(c for c in node.claims() if c.replica == node.id)
    assert own.clock <= node.lease
    lease = node.renew_lease()  # the next lease covers the clock, once durable
    assert lease >= node.replica.clock.last
