"""Interop with real Grenache components: grapes, and JS PeerRPC clients and servers.

Needs Node.js and the npm packages in tests/grenache (``make test-grenache``
installs them and runs this module); skipped when they are not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from .nodes import client, converged, eventually, start

HERE = Path(__file__).resolve().parent / "grenache"
MODULES = HERE / "node_modules"
pytestmark = pytest.mark.skipif(
    not (MODULES / "grenache-grape").exists() or shutil.which("node") is None,
    reason="real Grenache components not installed (make test-grenache)",
)


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def grapes():
    """Two grapes on loopback that know each other; yields their API URLs."""
    dht = [free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)]
    api = [free_port(), free_port()]
    procs = [
        subprocess.Popen(["node", str(MODULES / "grenache-grape/bin/grape.js"),
                          "--dp", str(dht[i]), "--aph", str(api[i]),
                          "--bn", f"127.0.0.1:{dht[1 - i]}", "-b", "127.0.0.1",
                          "--dpa", "120000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(2)
    ]
    urls = [f"http://127.0.0.1:{p}" for p in api]
    try:
        for url in urls:  # the HTTP API answers shortly after start
            for _ in range(100):
                try:
                    httpx.post(f"{url}/lookup", json={"data": "warmup"}, timeout=5)
                    break
                except httpx.HTTPError:
                    trio.run(trio.sleep, 0.1)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


async def node_js(*args: str) -> dict:
    result = await trio.run_process(["node", *args], cwd=HERE, capture_stdout=True,
                                    capture_stderr=True, check=False)
    lines = result.stdout.decode().strip().splitlines()
    assert lines, result.stderr.decode()[-500:]
    return json.loads(lines[-1])


async def test_nodes_on_two_grapes_discover_each_other_and_converge(nursery, grapes):
    fast = {"announce_interval_s": 1.0}
    a = await start(nursery, registry_url=grapes[0], **fast)
    await eventually(lambda: httpx.post(f"{grapes[1]}/lookup",
                                        json={"data": "crdtbook:default"}).json())
    b = await start(nursery, registry_url=grapes[1], **fast)
    await eventually(lambda: b.url in a.node.peers and a.url in b.node.peers, timeout=30)
    async with client() as http:
        await http.post(f"{a.url}/orders", json={"side": "sell", "qty": "2", "price": "10"})
        await http.post(f"{b.url}/orders", json={"side": "buy", "qty": "1", "price": "10"})
    await eventually(lambda: converged(a, b, events=2), timeout=30)
    assert len(a.node.replica.fills()) == 1


async def test_js_peerrpc_client_trades_on_a_node(nursery, grapes):
    a = await start(nursery, registry_url=grapes[0], announce_interval_s=1.0)
    b = await start(nursery, a.url)
    async with client() as http:
        await http.post(f"{b.url}/orders", json={"side": "buy", "qty": "1", "price": "12"})
    await eventually(lambda: converged(a, b, events=1))
    await eventually(lambda: httpx.post(f"{grapes[1]}/lookup",
                                        json={"data": "crdtbook:default:rpc"}).json())
    reply = await node_js("rpc_client.js", grapes[1], "crdtbook:default:rpc",
                          json.dumps({"action": "order", "side": "sell", "qty": "3",
                                      "price": "12", "token": a.token}))
    assert "result" in reply, reply
    assert [(f["qty"], f["price"]) for f in reply["result"]["fills"]] == [("1", "12")]
    await eventually(lambda: converged(a, b, events=2))
    assert b.node.replica.book().asks[0].qty == 2 * 10**8
    bad = await node_js("rpc_client.js", grapes[1], "crdtbook:default:rpc",
                        json.dumps({"action": "order", "side": "sell", "qty": 3,
                                    "token": a.token}))
    assert "ERR_BAD_AMOUNT" in bad["error"]
    unauthorized = await node_js("rpc_client.js", grapes[1], "crdtbook:default:rpc",
                                 json.dumps({"action": "order", "side": "sell", "qty": "3",
                                             "price": "12", "token": b.token}))
    assert "ERR_UNAUTHORIZED" in unauthorized["error"]  # b's account does not exist on a
    await eventually(lambda: converged(a, b, events=2))  # and nothing changed


async def test_js_peerrpc_server_registers_in_an_embedded_registry(nursery):
    a = await start(nursery)
    port = free_port()
    proc = await nursery.start(lambda task_status: trio.run_process(
        ["node", "rpc_server.js", a.url, "rpc_test", str(port)], cwd=HERE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        task_status=task_status))
    try:
        async with client() as http:
            async def found():
                r = await http.post(f"{a.url}/lookup", json={"data": "rpc_test"})
                return f"127.0.0.1:{port}" in r.json()
            await eventually(found, timeout=20)
            r = await http.post(f"http://127.0.0.1:{port}/",
                                content=json.dumps(["rid-1", "rpc_test", {"x": 1}]))
            assert r.json() == ["rid-1", None, {"echo": {"x": 1}}]
        # and a JS client finds it through the node's registry (link.lookup)
        reply = await node_js("rpc_client.js", a.url, "rpc_test", json.dumps({"y": 2}))
        assert reply == {"result": {"echo": {"y": 2}}}
        # ... as it finds the node's own PeerRPC there
        status = await node_js("rpc_client.js", a.url, "crdtbook:default:rpc",
                               json.dumps({"action": "status"}))
        assert status["result"]["replica"] == a.node.id
    finally:
        proc.terminate()


async def test_bootstrap_expect_on_two_grapes_forms_one_cluster(nursery, grapes):
    settings = {"announce_interval_s": 1.0, "bootstrap_expect": 2, "wait": False}
    a = await start(nursery, registry_url=grapes[0], **settings)
    b = await start(nursery, registry_url=grapes[1], **settings)
    ids = sorted([a.node.id, b.node.id])
    await eventually(lambda: all(r.node.joined and r.node.replica.members() == ids
                                 for r in (a, b)), timeout=30)
    founded = {e.replica for r in (a, b) for e in r.node.replica.events()
               if e.kind == "member" and e.action == "join" and e.replica == e.target}
    assert founded == {ids[0]}  # exactly one founded: the smallest id
