"""Order entry on an ephemeral node answers without waiting for its journal; a
durable node's 201 still means durable; reads of the store see every order
answered."""

from __future__ import annotations

from node import server
from node.store import journal

from .nodes import client, start

LONG_S = 3600.0  # no commit comes by itself while the test looks


async def test_an_ephemeral_node_answers_before_its_commit(nursery, monkeypatch):
    monkeypatch.setattr(journal, "LAZY_COMMIT_S", LONG_S)
    monkeypatch.setattr(server, "LEASE_RENEW_S", LONG_S)  # (a lease renewal syncs)
    node = await start(nursery)
    await node.node.journal.sync()
    commits = node.node.journal.commits
    async with client() as http:
        r = await http.post(f"{node.url}/orders", json={"side": "buy", "qty": "1", "price": "9"})
        assert r.status_code == 201 and r.json()["order"]["status"] == "open"
        assert node.node.journal.pending and node.node.journal.commits == commits
        order = r.json()["order"]["id"]
        assert (await http.get(f"{node.url}/orders/{order}")).json()["id"] == order
        events = (await http.get(f"{node.url}/events")).json()["events"]
        assert events[-1]["id"] == order  # the read made it durable first
        assert not node.node.journal.pending


async def test_a_durable_node_answers_once_durable(nursery, monkeypatch, tmp_path):
    monkeypatch.setattr(server, "LEASE_RENEW_S", LONG_S)
    node = await start(nursery, data_dir=str(tmp_path / "a"))
    async with client() as http:
        r = await http.post(f"{node.url}/orders", json={"side": "buy", "qty": "1", "price": "9"})
        assert r.status_code == 201
        assert not node.node.journal.pending


async def test_a_failed_journal_refuses_before_placing(nursery):
    node = await start(nursery)
    node.node.journal.failed = "disk on fire (test)"
    before = node.node.replica.digest()
    async with client() as http:
        r = await http.post(f"{node.url}/orders", json={"side": "buy", "qty": "1", "price": "9"})
    assert r.status_code == 503 and r.json()["error"] == "store_failed"
    assert node.node.replica.digest() == before  # nothing placed
