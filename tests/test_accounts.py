"""Accounts and authentication: tokens, whose orders a token may touch, rate limits,
protected mode. The abuse table: every refused request gets its 4xx and changes nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from node.api.auth import RateLimiter
from node.asgi import BadRequest
from node.service import Node, NodeConfig, ProtectedMode
from node.store import accounts

from .nodes import bearer, client, eventually, start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "node"]
SELL = {"side": "sell", "qty": "1", "price": "20"}


async def add(http, node, name: str) -> str:
    r = await http.post(node.url + "/accounts", json={"account": name}, headers=node.admin)
    assert r.status_code == 201, r.text
    assert r.json()["account"] == name and r.json()["token"].startswith("crdtbook-acct-")
    return r.json()["token"]


def state(node):
    n = node.node
    return n.replica.digest(), sorted(n.accounts.by_name.values(), key=lambda a: a.name)


@pytest.fixture
async def trio_node(nursery, tmp_path):
    """A node with accounts alice, bob and carol (revoked); alice has a resting order."""
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0.001, rate_burst=3)
    async with client() as http:
        tokens = {name: await add(http, a, name) for name in ("alice", "bob", "carol")}
        r = await http.delete(a.url + "/accounts/carol", headers=a.admin)
        assert r.status_code == 200 and r.json()["revoked"]
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(tokens["alice"]))
        assert r.status_code == 201 and r.json()["order"]["account"] == "alice"
    return a, tokens, r.json()["order"]["id"]


def abuse_table(tokens: dict, order_id: str):
    """(method, path, json, token name or literal, status, error)"""
    return [
        ("POST", "/orders", SELL, None, 401, "unauthorized"),
        ("POST", "/orders", SELL, "crdtbook-acct-" + "0" * 32, 401, "unauthorized"),
        ("POST", "/orders", SELL, "carol", 401, "unauthorized"),  # revoked
        ("POST", "/orders", {**SELL, "account": "alice"}, "bob", 403, "forbidden"),
        ("POST", "/orders", [SELL, {**SELL, "account": "alice"}], "bob", 403, "forbidden"),
        ("DELETE", f"/orders/{order_id}", None, "bob", 403, "forbidden"),
        ("DELETE", f"/orders/{order_id}", None, None, 401, "unauthorized"),
        ("DELETE", f"/orders/{order_id}", None, "carol", 401, "unauthorized"),
        ("GET", "/orders?account=alice", None, "bob", 403, "forbidden"),
        ("GET", "/orders", None, None, 401, "unauthorized"),
        ("GET", "/fills?account=alice", None, "bob", 403, "forbidden"),
        ("GET", "/fills?account=alice", None, None, 401, "unauthorized"),
        ("POST", "/accounts", {"account": "mallory"}, "bob", 401, "unauthorized"),
        ("GET", "/accounts", None, "alice", 401, "unauthorized"),
        ("DELETE", "/accounts/alice", None, "alice", 401, "unauthorized"),
        ("POST", "/orders", [SELL] * 4, "bob", 413, "batch_too_large"),  # over the burst
    ]


@pytest.mark.parametrize("case", range(16))
async def test_abuse_table(trio_node, case):
    a, tokens, order_id = trio_node
    method, path, body, who, status, error = abuse_table(tokens, order_id)[case]
    token = tokens.get(who, who)
    before = state(a)
    async with client(local_token=False) as http:
        r = await http.request(method, a.url + path, json=body,
                               headers=bearer(token) if token else None)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and r.json()["detail"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    for secret in tokens.values():
        assert secret not in r.text  # a token is never echoed
    assert state(a) == before


async def test_rate_limit_429_with_retry_after_changes_nothing(trio_node):
    a, tokens, _ = trio_node
    async with client(local_token=False) as http:
        r = await http.post(a.url + "/orders", json=[SELL, SELL], headers=bearer(tokens["alice"]))
        assert r.status_code == 201  # alice's bucket held 3: one order, then two
        before = state(a)
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(tokens["alice"]))
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert int(r.headers["retry-after"]) >= 1
        r = await http.delete(f"{a.url}/orders/{a.node.id}:2", headers=bearer(tokens["alice"]))
        assert r.status_code == 429  # cancels count too
        assert state(a) == before
        # buckets are per account: bob still has his
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(tokens["bob"]))
        assert r.status_code == 201 and r.json()["order"]["account"] == "bob"


async def test_the_owner_and_the_admin_cancel(trio_node):
    a, tokens, order_id = trio_node
    async with client(local_token=False) as http:
        r = await http.delete(f"{a.url}/orders/{order_id}", headers=bearer(tokens["alice"]))
        assert r.status_code == 200 and r.json()["cancel"]["status"] == "cancelled"
        r = await http.post(a.url + "/orders", json={**SELL, "account": "bob"},
                            headers=a.admin)  # the admin acts for any account
        assert r.status_code == 201 and r.json()["order"]["account"] == "bob"
        r = await http.delete(f"{a.url}/orders/{r.json()['order']['id']}", headers=a.admin)
        assert r.status_code == 200
        # own history with one's own token; market data with none
        r = await http.get(a.url + "/orders?account=alice", headers=bearer(tokens["alice"]))
        assert r.status_code == 200 and {o["account"] for o in r.json()["orders"]} == {"alice"}
        for path in ("/book", "/fills", "/status", "/events"):
            assert (await http.get(a.url + path)).status_code == 200, path


async def test_peerrpc_checks_the_token_field(trio_node):
    a, tokens, order_id = trio_node

    async def rpc(payload: dict):
        async with client(local_token=False) as http:
            r = await http.post(f"http://127.0.0.1:{a.node.rpc_port}/",
                                content=json.dumps(["r", "crdtbook:default:rpc", payload]))
        return r.json()

    before = state(a)
    for payload, code in [
        ({"action": "order", **SELL}, "ERR_UNAUTHORIZED"),
        ({"action": "order", **SELL, "token": "nope"}, "ERR_UNAUTHORIZED"),
        ({"action": "order", **SELL, "token": tokens["carol"]}, "ERR_UNAUTHORIZED"),
        ({"action": "order", **SELL, "account": "alice", "token": tokens["bob"]},
         "ERR_FORBIDDEN"),
        ({"action": "cancel", "id": order_id, "token": tokens["bob"]}, "ERR_FORBIDDEN"),
        ({"action": "fills", "account": "alice", "token": tokens["bob"]}, "ERR_FORBIDDEN"),
    ]:
        _, err, result = await rpc(payload)
        assert result is None and err.split(":", 1)[0] == code, (payload, err)
    assert state(a) == before
    _, err, book = await rpc({"action": "book"})  # market data: public
    assert err is None and book["asks"]
    _, err, placed = await rpc({"action": "order", **SELL, "token": tokens["bob"]})
    assert err is None and placed["order"]["account"] == "bob"


async def test_accounts_are_kept_hashed_and_survive_a_restart(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    async with client() as http:
        alice = await add(http, a, "alice")
        gone = await add(http, a, "gone")
        r = await http.post(a.url + "/accounts", json={"account": "alice"}, headers=a.admin)
        assert r.status_code == 409  # taken
        r = await http.post(a.url + "/accounts", json={"account": "no spaces"},
                            headers=a.admin)
        assert r.status_code == 400
        assert (await http.delete(a.url + "/accounts/gone", headers=a.admin)).status_code == 200
        r = await http.post(a.url + "/accounts", json={"account": "gone"}, headers=a.admin)
        assert r.status_code == 409  # a revoked name is never reused
        listed = (await http.get(a.url + "/accounts", headers=a.admin)).json()["accounts"]
        assert [(x["account"], x["revoked"] is None) for x in listed] == [
            ("alice", True), ("gone", False), ("local", True)]
    await a.stop()
    raw = b"".join((tmp_path / "a" / f).read_bytes()
                   for f in os.listdir(tmp_path / "a") if f.startswith("store.sqlite"))
    assert alice.encode() not in raw and accounts.digest(alice) in raw  # only the hash
    b = await start(nursery, data_dir=str(tmp_path / "a"), wait=False)
    async with client(local_token=False) as http:
        r = await http.post(b.url + "/orders", json=SELL, headers=bearer(alice))
        assert r.status_code == 201 and r.json()["order"]["account"] == "alice"
        r = await http.post(b.url + "/orders", json=SELL, headers=bearer(gone))
        assert r.status_code == 401


async def test_the_default_account_token_file(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    where = accounts.path(str(tmp_path / "a"))
    assert stat.S_IMODE(os.stat(where).st_mode) == 0o600
    async with client() as http:  # sends it
        r = await http.post(a.url + "/orders", json=SELL)
        assert r.status_code == 201 and r.json()["order"]["account"] == "local"
    await a.stop()
    old = a.token
    os.unlink(where)  # a new one is made at the next start; the old one stops working
    b = await start(nursery, data_dir=str(tmp_path / "a"), wait=False)
    assert b.token != old
    async with client(local_token=False) as http:
        assert (await http.post(b.url + "/orders", json=SELL,
                                headers=bearer(old))).status_code == 401
        assert (await http.post(b.url + "/orders", json=SELL,
                                headers=bearer(b.token))).status_code == 201


async def test_without_auth_on_loopback_anyone_trades(nursery):
    a = await start(nursery, auth=False)
    async with client(local_token=False) as http:
        r = await http.post(a.url + "/orders", json={**SELL, "account": "anyone"})
        assert r.status_code == 201 and r.json()["order"]["account"] == "anyone"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com"])
def test_protected_mode_refuses_before_touching_anything(tmp_path, host):
    with pytest.raises(ProtectedMode, match="protected mode"):
        Node(NodeConfig(host=host, port=0, auth=False, data_dir=str(tmp_path / "d")))
    with pytest.raises(ProtectedMode):
        Node(NodeConfig(port=0, auth=False, rpc_host=host, data_dir=str(tmp_path / "d")))
    assert not os.path.exists(tmp_path / "d")


def test_protected_mode_and_insecure_no_auth_from_the_cli(tmp_path):
    refused = subprocess.run([*CLI, "node", "--listen", "0.0.0.0:0", "--no-auth", "--data-dir",
                              str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "--insecure-no-auth" in \
        refused.stderr
    proc = subprocess.Popen([*CLI, "node", "--listen", "127.0.0.1:0", "--insecure-no-auth",
                             "--data-dir", str(tmp_path / "y"), "--log-level", "error"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert " listening on " in proc.stdout.readline()
        lines = []
        while not any("WARNING: --insecure-no-auth" in line for line in lines):
            line = proc.stderr.readline()
            assert line, lines
            lines.append(line)
    finally:
        proc.kill()
        proc.wait()


def test_account_commands_and_the_cli_token(tmp_path):
    directory = str(tmp_path / "n")
    proc = subprocess.Popen([*CLI, "node", "--listen", "127.0.0.1:0", "--data-dir", directory,
                             "--log-level", "warning"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().split()[-1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRDTBOOK_")}

        def cli(*args, token=None):
            e = dict(env, CRDTBOOK_NODE=url, **({"CRDTBOOK_TOKEN": token} if token else {}))
            return subprocess.run([*CLI, *args], cwd=ROOT, env=e, capture_output=True,
                                  text=True, timeout=60)

        added = cli("account", "add", "alice", "--data-dir", directory)
        assert added.returncode == 0, added.stderr
        token = added.stdout.strip()
        assert token.startswith("crdtbook-acct-") and "once" in added.stderr
        listed = cli("account", "list", "--data-dir", directory, "--json")
        assert [a["account"] for a in json.loads(listed.stdout)["accounts"]] == ["alice",
                                                                                 "local"]
        placed = cli("order", "sell", "3@12", "--json", token=token)
        assert placed.returncode == 0 and json.loads(placed.stdout)["order"]["account"] == "alice"
        local = cli("order", "sell", "3@12", "--json", "--data-dir", directory)
        assert json.loads(local.stdout)["order"]["account"] == "local"  # the default account
        other = cli("order", "sell", "1@12", "--account", "bob", token=token)
        assert other.returncode == 1 and "403" in other.stderr
        nobody = cli("order", "sell", "1@12")
        assert nobody.returncode == 1 and "401" in nobody.stderr and "--token" in nobody.stderr
        revoked = cli("account", "revoke", "alice", "--data-dir", directory)
        assert revoked.returncode == 0, revoked.stderr
        refused = cli("order", "sell", "1@12", token=token)
        assert refused.returncode == 1 and "refused the token" in refused.stderr
    finally:
        proc.kill()
        proc.wait()


def test_rate_limiter_buckets_with_an_injected_clock():
    now = [0.0]
    limiter = RateLimiter(2.0, 4, lambda: now[0])
    limiter.take({"a": 4})
    with pytest.raises(BadRequest) as refused:
        limiter.take({"a": 1})
    assert refused.value.status == 429 and refused.value.headers == [(b"retry-after", b"1")]
    with pytest.raises(BadRequest) as refused:
        limiter.take({"b": 1, "a": 3})  # all or nothing: b's bucket is not touched
    assert refused.value.headers == [(b"retry-after", b"2")]
    assert "b" not in limiter.buckets
    now[0] = 0.5  # one refilled
    limiter.take({"a": 1})
    with pytest.raises(BadRequest):
        limiter.take({"a": 1})
    now[0] = 100.0  # never above the burst
    limiter.take({"a": 4})
    with pytest.raises(BadRequest):
        limiter.take({"a": 1})
    with pytest.raises(BadRequest) as too_big:
        limiter.take({"c": 5})
    assert too_big.value.status == 413
    RateLimiter(0, 1, lambda: 0.0).take({"a": 10**6})  # 0: unlimited


async def test_a_new_account_trades_at_once_and_is_per_node(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    b = await start(nursery, a.url, data_dir=str(tmp_path / "b"))
    async with client() as http:
        alice = await add(http, a, "alice")
    async with client(local_token=False) as http:
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(alice))
        assert r.status_code == 201
        r = await http.post(b.url + "/orders", json=SELL, headers=bearer(alice))
        assert r.status_code == 401  # accounts are per node
    # the account label travels with the order event, as before
    await eventually(lambda: any(e.kind == "order" and e.account == "alice"
                                 for e in b.node.replica.events()))
