"""Durability with real node processes: kill -9 under load, restarts, history, store faults.

Every node here is a ``crdtbook node`` child process with its own data
directory (tests/procs.py), killed with SIGKILL or stopped with SIGTERM and
restarted on the same directory and port.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys

import httpx
import trio

from .nodes import admin_headers, eventually
from .nodes import client as http_client
from .procs import ROOT, NodeProcess, get, paged
from .reference import replay


async def start_cluster(tmp_path, n: int = 3, **kwargs) -> list[NodeProcess]:
    first = NodeProcess(str(tmp_path / "n0"), **kwargs)
    await first.start()
    nodes = [first]
    for i in range(1, n):
        node = NodeProcess(str(tmp_path / f"n{i}"), first.url, **kwargs)
        await node.start()
        nodes.append(node)
    async with http_client(timeout=5) as client:
        async def all_joined():
            for node in nodes:
                status = await get(client, node.url, "/status")
                if not status["joined"] or len(status["members"]) != n:
                    return False
            return True
        await eventually(all_joined, timeout=30)
    return nodes


async def converged(client: httpx.AsyncClient, nodes: list[NodeProcess]) -> bool:
    try:
        digests = {(await get(client, n.url, "/status"))["digest"] for n in nodes}
    except httpx.HTTPError:
        return False
    return len(digests) == 1


def stop_all(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        node.kill()


async def test_kill_9_under_load_loses_no_acknowledged_order(tmp_path):
    nodes = await start_cluster(tmp_path)
    acknowledged: dict[str, str] = {}  # order id -> node url that acknowledged it
    rng = random.Random(8)
    victim_ids = set()
    try:
        async with http_client(timeout=5) as client:
            stop = trio.Event()
            up = {node.url: trio.Event() for node in nodes}  # replaced while a node is down
            for event in up.values():
                event.set()

            async def trader(node: NodeProcess, seed: int) -> None:
                local = random.Random(seed)
                while not stop.is_set():
                    batch = [{"side": local.choice(["buy", "sell"]),
                              "qty": str(local.randint(1, 5)),
                              "price": str(local.randint(95, 105))}
                             for _ in range(local.choice([1, 1, 20]))]
                    try:
                        response = await client.post(node.url + "/orders", json=batch)
                    except httpx.HTTPError:
                        await up[node.url].wait()  # the node is down: retry once it is back
                        continue
                    if response.status_code == 201:
                        for result in response.json():
                            acknowledged[result["order"]["id"]] = node.url

            async with trio.open_nursery() as nursery:
                for i, node in enumerate(nodes):
                    nursery.start_soon(trader, node, i)
                for _ in range(3):
                    # a random moment: after a random amount of acknowledged load
                    target = len(acknowledged) + rng.randint(50, 400)
                    await eventually(lambda t=target: len(acknowledged) >= t, timeout=60)
                    victim = nodes[rng.randrange(1, len(nodes))]
                    before = victim.replica
                    up[victim.url] = trio.Event()
                    victim.kill()
                    await victim.start()
                    up[victim.url].set()
                    assert victim.replica == before  # the same replica, not a new one
                    victim_ids.add(victim.replica)
                target = len(acknowledged) + 100  # load after the last restart too
                await eventually(lambda: len(acknowledged) >= target, timeout=60)
                stop.set()

            assert len(acknowledged) > 50
            await eventually(lambda: converged(client, nodes), timeout=60)
            outcomes = []
            for node in nodes:
                orders = await paged(client, node.url, "/orders", "orders")
                by_id = {o["id"]: (o["status"], o["filled"], o["resting"]) for o in orders}
                assert len(by_id) == len(orders)  # nothing held twice
                missing = set(acknowledged) - set(by_id)
                assert not missing, f"{node.url} lacks acknowledged orders {sorted(missing)[:5]}"
                outcomes.append({i: by_id[i] for i in acknowledged})
                events = await paged(client, node.url, "/events", "events")
                assert len({e["id"] for e in events}) == len(events)
            assert outcomes[0] == outcomes[1] == outcomes[2]
            assert victim_ids  # at least one node was killed and came back
    finally:
        stop_all(nodes)


async def test_restart_of_every_node_brings_everything_back(tmp_path):
    nodes = await start_cluster(tmp_path)
    try:
        async with http_client(timeout=5) as client:
            for i in range(30):
                node = nodes[i % 3]
                r = await client.post(node.url + "/orders", json={
                    "side": "buy" if i % 2 else "sell", "qty": "2", "price": str(100 + i % 5)})
                assert r.status_code == 201
            await eventually(lambda: converged(client, nodes), timeout=30)

            async def picture():
                out = []
                for node in nodes:
                    status = await get(client, node.url, "/status")
                    book = await get(client, node.url, "/book")
                    fills = await paged(client, node.url, "/fills", "fills")
                    out.append((status["digest"], book["bids"], book["asks"],
                                [(f["id"], f["qty"], f["price"]) for f in fills]))
                return out

            before = await picture()
            ids = [n.replica for n in nodes]
            for how in ("sigterm", "kill"):
                for node in nodes:
                    if how == "kill":
                        node.kill()
                    else:
                        assert await node.stop() == 0
                for node in nodes:
                    await node.start()
                assert [n.replica for n in nodes] == ids
                await eventually(lambda: converged(client, nodes), timeout=30)
                assert await picture() == before
                status = await get(client, nodes[0].url, "/status")
                assert sorted(status["members"]) == sorted(ids)  # a restart is not a leave
    finally:
        stop_all(nodes)


async def test_history_after_compaction_matches_the_reference(tmp_path):
    # compaction every 5 s (the default): wait until fills have left memory
    nodes = await start_cluster(tmp_path)
    try:
        async with http_client(timeout=5) as client:
            first_order = None
            for i in range(60):
                r = await client.post(nodes[i % 3].url + "/orders", json={
                    "side": "buy" if i % 2 else "sell", "qty": str(1 + i % 3),
                    "price": str(100 + (i * 7) % 5), "account": f"acct{i % 4}"},
                    headers=admin_headers(nodes[i % 3].data_dir))  # acts for any account
                assert r.status_code == 201
                first_order = first_order or r.json()["order"]["id"]
            await eventually(lambda: converged(client, nodes), timeout=30)

            async def compacted():
                for node in nodes:
                    status = await get(client, node.url, "/status")
                    if status["events"] >= status["events_total"] - 20:
                        return False
                return True
            await eventually(compacted, timeout=40, interval=0.5)

            histories = []
            for node in nodes:
                fills = await paged(client, node.url, "/fills", "fills")
                histories.append([(f["index"], f["id"], f["price"], f["qty"], f["final"])
                                  for f in fills])
            assert histories[0] == histories[1] == histories[2]
            assert histories[0] and all(final for *_, final in histories[0])

            # the fills equal a plain reference engine over the events, paged to the end
            events = await paged(client, nodes[0].url, "/events", "events")
            reference, _, _ = replay(_events(events))
            assert [f[1] for f in histories[0]] == [
                f"{t[0]}:{t[1]}/{m[0]}:{m[1]}" for t, m, _, _ in reference]

            # a small page size walks the same fills
            walked, after = [], None
            while True:
                query = "/fills?limit=7" + (f"&after={after}" if after else "")
                page = await get(client, nodes[1].url, query)
                walked += [f["id"] for f in page["fills"]]
                after = page["next"]
                if after is None:
                    break
            assert walked == [f[1] for f in histories[0]]

            order = await get(client, nodes[2].url, f"/orders/{first_order}")
            assert order["final"] is True and order["status"] in ("filled", "cancelled",
                                                                   "open")
            assert order["time"].endswith("Z")
            for node in nodes:  # per account, from the store and memory alike
                async with http_client(timeout=5, headers=admin_headers(node.data_dir)) as admin:
                    mine = await paged(admin, node.url, "/fills?account=acct1", "fills")
                assert mine and all("acct1" in (f["taker_account"], f["maker_account"])
                                    for f in mine)
    finally:
        stop_all(nodes)


def _events(items: list[dict]):
    from crdtbook.amount import parse_amount
    from crdtbook.events import make_cancel, make_member, make_order

    out = []
    for e in items:
        replica, seq, clock = e["replica"], e["seq"], e["clock"]
        if e["kind"] == "order":
            price = 0 if e["price"] is None else parse_amount(e["price"], "price")
            out.append(make_order(clock, replica, seq, e["side"], e["type"], price,
                                  parse_amount(e["qty"], "qty"), e["account"]))
        elif e["kind"] == "cancel":
            target, target_seq = e["target"].rsplit(":", 1)
            out.append(make_cancel(clock, replica, seq, target, int(target_seq)))
        else:
            out.append(make_member(clock, replica, seq, e["action"], e["target"],
                                   e["last_seq"]))
    return out


async def test_leave_and_evict_cancel_resting_orders_everywhere(tmp_path):
    nodes = await start_cluster(tmp_path)
    leaver, gone = nodes[1], nodes[2]
    try:
        async with http_client(timeout=10) as client:
            resting = {}
            for node in (leaver, gone):
                r = await client.post(node.url + "/orders",
                                      json={"side": "sell", "qty": "5", "price": "200"})
                assert r.status_code == 201
                resting[node.url] = r.json()["order"]["id"]
            await eventually(lambda: converged(client, nodes), timeout=30)

            r = await client.post(leaver.url + "/leave", headers=admin_headers(leaver.data_dir))
            assert r.status_code == 200, r.text
            assert await trio.to_thread.run_sync(leaver.proc.wait) == 0  # it stops by itself

            gone.kill()
            gone_id = gone.replica
            r = await client.post(nodes[0].url + "/evict",
                                  json={"replica": gone_id, "force": True}, timeout=30,
                                  headers=admin_headers(nodes[0].data_dir))
            assert r.status_code == 200, r.text

            async def cancelled():
                left = await get(client, nodes[0].url, f"/orders/{resting[leaver.url]}")
                evicted = await get(client, nodes[0].url, f"/orders/{resting[gone.url]}")
                return (left["status"], left["reason"], evicted["status"],
                        evicted["reason"]) == ("cancelled", "owner left", "cancelled",
                                               "owner evicted")
            await eventually(cancelled, timeout=20)
            book = await get(client, nodes[0].url, "/book")
            assert book["asks"] == []

            # an order that would have crossed them finds nothing to trade with
            r = await client.post(nodes[0].url + "/orders",
                                  json={"side": "buy", "qty": "1", "price": "300"})
            assert r.json()["order"]["status"] == "open"

            # a replica that left or was evicted refuses to start on its data directory
            for node, how in ((leaver, "left the cluster"), (gone, "evicted from the cluster")):
                if node is gone:  # it must first learn of it: start it, let it pull
                    await node.start()
                    await eventually(lambda n=node: _retired(client, n), timeout=20)
                    # /status shows memory: wait for the commit that makes it durable, or
                    # the kill can beat it and the node, started again, runs on
                    await eventually(lambda n=node: _retired_in_store(n), timeout=20)
                    node.kill()
                with trio.fail_after(30):  # one that does not refuse would serve forever
                    result = await trio.run_process(node.command(), capture_stdout=True,
                                                    capture_stderr=True, check=False, cwd=ROOT)
                assert result.returncode != 0
                assert how in result.stderr.decode()
                assert "--rejoin-as-new" in result.stderr.decode()
            leaver.extra.append("--rejoin-as-new")
            old = leaver.replica
            await leaver.start()
            assert leaver.replica != old
            assert any(name.startswith("retired-") for name in os.listdir(leaver.data_dir))
    finally:
        stop_all(nodes)


async def _retired(client, node) -> bool:
    try:
        status = await get(client, node.url, "/status")
    except httpx.HTTPError:
        return False
    return status["evicted"] is True


def _retired_in_store(node) -> bool:
    db = sqlite3.connect(f"file:{node.data_dir}/store.sqlite?mode=ro", uri=True)
    try:
        return db.execute("SELECT value FROM meta WHERE key = 'retired'").fetchone() is not None
    finally:
        db.close()


def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", "node", "--listen", "127.0.0.1:0",
                           "--log-level", "warning", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def test_store_faults_refuse_to_start_and_change_nothing(tmp_path):
    # a directory in use by another node (its LOCK is held)
    holder = subprocess.Popen([sys.executable, "-m", "node", "node", "--listen", "127.0.0.1:0",
                               "--data-dir", str(tmp_path / "busy"), "--log-level", "warning"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert " listening on " in holder.stdout.readline()
        result = run_node("--data-dir", str(tmp_path / "busy"))
        assert result.returncode != 0 and "in use by another node" in result.stderr
    finally:
        holder.kill()
        holder.wait()

    # another book's store
    result = run_node("--data-dir", str(tmp_path / "busy"), "--book", "other")
    assert result.returncode != 0 and "holds book 'default', not 'other'" in result.stderr

    # an unknown schema
    with sqlite3.connect(tmp_path / "busy" / "store.sqlite") as db:
        db.execute("UPDATE meta SET value = 7 WHERE key = 'schema'")
    result = run_node("--data-dir", str(tmp_path / "busy"))
    assert result.returncode != 0 and "schema 7" in result.stderr

    # a corrupt store is reported and left exactly as it was
    bad = tmp_path / "bad"
    bad.mkdir()
    garbage = os.urandom(8192)
    (bad / "store.sqlite").write_bytes(garbage)
    result = run_node("--data-dir", str(bad))
    assert result.returncode != 0 and "corrupt" in result.stderr
    assert (bad / "store.sqlite").read_bytes() == garbage

    # a path that cannot be a directory (unwritable for root too)
    (tmp_path / "file").write_text("x")
    result = run_node("--data-dir", str(tmp_path / "file" / "sub"))
    assert result.returncode != 0 and "cannot use data directory" in result.stderr
    assert "Traceback" not in result.stderr
