"""Attacks on the front door (auth, rate limits, bounds) against real nodes.

Each test is one attack: it passes when the node refused it properly (a 4xx
or an ERR_ reply, no 5xx, no state change, /status still answering). The
three that once got through (concurrent huge pushes, million-item pushes, a
registry flood from many loopback addresses) are fixed; their tests stay.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import time

import httpx
import pytest
import trio

from .nodes import LIVENESS_S, bearer, client, eventually, start
from .procs import NodeProcess
from .test_accounts import add
from .test_resources import MAX_RSS_MB, vm_kb

SELL = {"side": "sell", "qty": "1", "price": "20"}


def rpc_url(a) -> str:
    return f"http://127.0.0.1:{a.node.rpc_port}/"


async def rpc(http, a, payload, gz: bool = False, raw: bytes | None = None) -> list:
    body = raw if raw is not None else json.dumps(["rid", a.node.rpc_key, payload]).encode()
    headers = {"grc-compress": "gzip"} if gz else {}
    r = await http.post(rpc_url(a), content=gzip.compress(body) if gz and raw is None else body,
                        headers=headers)
    assert r.status_code == 200, r.text
    return json.loads(gzip.decompress(r.content) if gz else r.content)


async def digest(http, url: str) -> str:
    r = await http.get(url + "/status", timeout=1.0)
    assert r.status_code == 200
    return r.json()["digest"]


@pytest.fixture
async def node3(nursery, tmp_path):
    """A node with accounts alice and bob (tokens), rate 0.001/s burst 3."""
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0.001, rate_burst=3)
    async with client() as http:
        tokens = {name: await add(http, a, name) for name in ("alice", "bob")}
    return a, tokens


# -- (1) auth ------------------------------------------------------------------
async def test_authorization_header_variants(node3):
    a, tokens = node3
    t = tokens["alice"]
    refused = [
        {"Authorization": f"Bearer\t{t}"},
        {"Authorization": f"Bearer{t}"},
        {"Authorization": f"Basic {t}"},
        {"Authorization": f"Bearer {t} extra"},
        {"Authorization": f"Bearer {t.upper()}"},
        {"Authorization": f"Bearer {t}\u00a0".encode()},
        {"Authorization": ""},
        {"Authorization": "Bearer  -"},
        {"X-Authorization": f"Bearer {t}"},
    ]
    async with client(local_token=False) as http:
        before = await digest(http, a.url)
        for headers in refused:
            r = await http.post(a.url + "/orders", json=SELL, headers=headers)
            assert r.status_code == 401, (headers, r.status_code, r.text)
            assert t not in r.text
        # a token in the query string is not a token
        r = await http.post(a.url + f"/orders?token={t}&access_token={t}", json=SELL)
        assert r.status_code == 401
        assert await digest(http, a.url) == before
        # the scheme is case-insensitive (RFC 7235) and surrounding blanks are fine
        for variant in (f"bearer {t}", f"BEARER {t}", f"Bearer   {t}"):
            r = await http.post(a.url + "/orders", json=SELL, headers={"Authorization": variant})
            assert r.status_code == 201 and r.json()["order"]["account"] == "alice"


async def test_two_authorization_headers_never_act_for_the_wrong_one(node3):
    """Two Authorization headers: the node must not let a valid one vouch for an
    invalid one's account, nor act for whichever it pleases; a 401/400 is best."""
    a, tokens = node3
    host, port = a.url.split("://")[1].rsplit(":", 1)
    body = json.dumps({**SELL, "account": "bob"}).encode()
    for first, second in ((tokens["alice"], tokens["bob"]), (tokens["bob"], tokens["alice"])):
        async with client(local_token=False) as http:
            before = await digest(http, a.url)
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\n".encode()
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
        await stream.aclose()
        status = int(data.split(b" ", 2)[1])
        # it acted for the last header (bob) or refused; never a 5xx
        assert status in (201, 400, 401, 403), data
        if first == tokens["bob"]:  # the last is alice's: "account": "bob" must be refused
            assert status in (400, 401, 403), data
            async with client(local_token=False) as http:
                assert await digest(http, a.url) == before


async def test_revoked_token_stops_at_once_over_http_and_peerrpc(node3):
    a, tokens = node3
    async with client() as http:
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(tokens["bob"]))
        assert r.status_code == 201
        r = await http.delete(a.url + "/accounts/bob", headers=a.admin)
        assert r.status_code == 200
        before = await digest(http, a.url)
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(tokens["bob"]))
        assert r.status_code == 401
        reply = await rpc(http, a, {"action": "order", "token": tokens["bob"], **SELL})
        assert reply[1].startswith("ERR_UNAUTHORIZED")
        # a revoked name cannot be re-added to take the old label
        r = await http.post(a.url + "/accounts", json={"account": "bob"}, headers=a.admin)
        assert r.status_code == 409
        assert await digest(http, a.url) == before


async def test_peerrpc_token_field_of_wrong_type_or_huge(node3):
    a, tokens = node3
    t = tokens["alice"]
    async with client(local_token=False) as http:
        before = await digest(http, a.url)
        for token in (None, 1, 1.5, True, [t], {"token": t}, t * 1000, "x" * (10_000_000 // 20),
                      t + "\u0000", t.upper(), " " + t):
            reply = await rpc(http, a, {"action": "order", "token": token, **SELL})
            assert reply[1] is not None and reply[1].startswith("ERR_UNAUTHORIZED"), \
                (str(token)[:40], reply)
            assert t not in json.dumps(reply)
        # the account field names another account: forbidden, over PeerRPC too
        reply = await rpc(http, a, {"action": "order", "token": t, **SELL, "account": "bob"})
        assert reply[1].startswith("ERR_FORBIDDEN")
        reply = await rpc(http, a, {"action": "fills", "token": t, "account": "bob"})
        assert reply[1].startswith("ERR_FORBIDDEN")
        reply = await rpc(http, a, {"action": "fills", "token": t, "account": ""})
        assert reply[1] is not None
        assert await digest(http, a.url) == before


async def test_cancel_of_another_accounts_order_by_crafted_ids(node3):
    a, tokens = node3
    async with client(local_token=False) as http:
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(tokens["alice"]))
        oid = r.json()["order"]["id"]
        replica, seq = oid.rsplit(":", 1)
        before = await digest(http, a.url)
        arabic = "".join(chr(0x660 + int(d)) for d in seq)
        fullwidth = "".join(chr(0xFF10 + int(d)) for d in seq)
        crafted = [oid, f"{replica}:{arabic}", f"{replica}:{fullwidth}", f"{replica}:0{seq}",
                   f"{replica}:+{seq}", f"{replica}:{seq} ", f"{replica.upper()}:{seq}",
                   f"x:{replica}:{seq}", f"{replica}:{seq}:", f"{replica}%3A{seq}",
                   f"{replica}:{'9' * 5000}", f"{replica}:-1"]
        for cid in crafted:
            r = await http.delete(a.url + "/orders/" + cid, headers=bearer(tokens["bob"]))
            assert r.status_code in (400, 403, 404), (cid[:60], r.status_code, r.text)
            reply = await rpc(http, a, {"action": "cancel", "token": tokens["bob"], "id": cid})
            assert reply[1].startswith(("ERR_FORBIDDEN", "ERR_BAD_ID", "ERR_NOT_FOUND")), \
                (cid[:60], reply)
        assert await digest(http, a.url) == before


async def test_account_query_with_odd_encodings(node3):
    a, tokens = node3
    async with client(local_token=False) as http:
        await http.post(a.url + "/orders", json=SELL, headers=bearer(tokens["alice"]))
        for query in ("account=alice", "account=%61lice", "acc%6Funt=alice",
                      "account=bob&account=alice", "account=alice&account=bob",
                      "account=alice%00", "account=alice%20", "account=ALICE",
                      "account=alic%C3%A9", "account=%FF%FE", "account=alice;account=bob",
                      "account", "account=", "ACCOUNT=alice&account=alice"):
            for path in ("/orders", "/fills"):
                r = await http.get(f"{a.url}{path}?{query}", headers=bearer(tokens["bob"]))
                assert r.status_code in (400, 403) or (
                    r.status_code == 200 and all(
                        o.get("account", o.get("taker_account")) != "alice"
                        for o in r.json()[path[1:]])), (path, query, r.status_code, r.text[:200])


# -- (2) rate limits -----------------------------------------------------------
async def test_rate_limit_is_shared_by_batches_cancels_peerrpc_and_connections(node3):
    a, tokens = node3  # burst 3, refill 0.001/s
    t = tokens["alice"]
    async with client(local_token=False) as http:
        r = await http.post(a.url + "/orders", json=[SELL] * 4, headers=bearer(t))
        assert r.status_code == 413
        r = await http.post(a.url + "/orders", json=[SELL] * 2, headers=bearer(t))
        assert r.status_code == 201
        reply = await rpc(http, a, {"action": "order", "token": t, **SELL})
        assert reply[1] is None
        oid = reply[2]["order"]["id"]
        before = await digest(http, a.url)
        # the bucket is empty: HTTP, PeerRPC, cancels and parallel connections all get 429
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(t))
        assert r.status_code == 429 and r.headers["retry-after"]
        reply = await rpc(http, a, {"action": "order", "token": t, **SELL})
        assert reply[1].startswith("ERR_RATE_LIMITED")
        r = await http.delete(a.url + "/orders/" + oid, headers=bearer(t))
        assert r.status_code == 429
        reply = await rpc(http, a, {"action": "cancel", "token": t, "id": oid})
        assert reply[1].startswith("ERR_RATE_LIMITED")
        statuses = []

        async def one():
            async with client(local_token=False) as h:
                statuses.append((await h.post(a.url + "/orders", json=SELL,
                                              headers=bearer(t))).status_code)

        async with trio.open_nursery() as n:
            for _ in range(50):
                n.start_soon(one)
        assert set(statuses) == {429}
        assert await digest(http, a.url) == before
        # bob's bucket is his own
        r = await http.post(a.url + "/orders", json=SELL, headers=bearer(tokens["bob"]))
        assert r.status_code == 201


# -- (3) bounds ----------------------------------------------------------------
async def test_json_bombs_in_orders_and_peerrpc(node3):
    a, tokens = node3
    t = tokens["alice"]
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"side":"sell","qty":' + b"[" * 50_000 + b"]" * 50_000 + b',"price":"1"}',
        b'{"side":"sell","qty":1e400,"price":"1"}',
        b'{"side":"sell","qty":' + b"9" * 5000 + b',"price":"1"}',
        b'{"side":"sell","qty":' + b"9" * 4000 + b',"price":"1"}',
        b'{"side":"sell","qty":"' + b"9" * 100_000 + b'","price":"1"}',
        b'{"side":"sell","qty":"1e999999999","price":"1"}',
        b'{"side":"sell","qty":"1","price":"0.' + b"0" * 100_000 + b'1"}',
        b'{"side":"sell","qty":NaN,"price":"1"}',
        b'{"side":"sell","qty":"\xff\xfe","price":"1"}',
        b'{"side":"sell","qty":"1","price":"1","account":"\\ud800"}',
    ]
    async with client(local_token=False) as http:
        before = await digest(http, a.url)
        for body in bodies:
            r = await http.post(a.url + "/orders", content=body, headers=bearer(t))
            assert 400 <= r.status_code < 500, (body[:60], r.status_code, r.text[:200])
            assert len(r.content) < 2000
            payload_raw = b'["rid","' + a.node.rpc_key.encode() + b'",{"action":"order",' \
                + b'"token":"' + t.encode() + b'",' + body.lstrip(b"[{") + b"]"
            reply = await rpc(http, a, None, raw=payload_raw)
            assert reply[1] is not None and not reply[1].startswith("ERR_INTERNAL"), \
                (body[:60], reply)
        for fields in ({"qty": 1e300}, {"qty": 10**4000}, {"qty": "1", "price": 10**300},
                       {"depth": 10**4000}):
            reply = await rpc(http, a, {"action": "order", "token": t, **SELL, **fields})
            assert reply[1] is not None and not reply[1].startswith("ERR_INTERNAL"), reply
        for fields in ({"limit": 10**4000}, {"after": 10**4000}, {"limit": -1},
                       {"after": "9" * 10_000}, {"limit": "١٠"}):
            reply = await rpc(http, a, {"action": "fills", **fields})
            assert reply[1] is not None and not reply[1].startswith("ERR_INTERNAL"), \
                (str(fields)[:60], reply[1])
        assert await digest(http, a.url) == before


async def test_long_urls_many_parameters_and_unicode_queries(node3):
    a, _ = node3
    paths = ["/book?" + "&".join(f"p{i}=1" for i in range(1500)),
             "/book?depth=" + "9" * 15_000, "/" + "a" * 15_000, "/orders/" + "a" * 15_000,
             "/fills?limit=١٠", "/fills?after=" + "9" * 5000, "/events?after=" + "9" * 5000,
             "/events?limit=" + "9" * 5000, "/book?depth=١٠", "/fills?limit=%F0%9F%92%A9",
             "/" + "a" * 60_000]
    async with client() as http:
        before = await digest(http, a.url)
        for path in paths:
            try:
                r = await http.get(a.url + path)
            except httpx.HTTPError:
                continue  # cut: acceptable for a request past the header limit
            assert r.status_code < 500 and (r.status_code >= 400 or path.startswith("/book?p")), \
                (path[:60], r.status_code, r.text[:200])
        host, port = a.url.split("://")[1].rsplit(":", 1)
        for head in (b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"GET /book HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n"):
            reply = await raw(host, int(port), head)
            assert reply == b"" or reply.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), reply[:80]
        assert await digest(http, a.url) == before


async def raw(host: str, port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; what comes back until it closes (5 s at most)."""
    stream = await trio.open_tcp_stream(host, port)
    got = b""
    with trio.move_on_after(5):
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(data)
        try:
            while chunk := await stream.receive_some():
                got += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    return got


async def test_chunked_bodies_over_the_limit_are_cut(node3):
    a, tokens = node3

    async def chunks():
        piece = b" " * 65536
        for _ in range(100):  # 6.4 MB, over the 4 MiB client limit
            yield piece

    async with client(local_token=False) as http:
        before = await digest(http, a.url)
        for path, headers in (("/orders", bearer(tokens["alice"])),):
            try:
                r = await http.post(a.url + path, content=chunks(), headers=headers)
                assert r.status_code == 413, r.text
            except httpx.HTTPError:
                pass  # the node closed the connection: as good
        try:
            r = await http.post(rpc_url(a), content=chunks())
            assert r.status_code == 200 and b"ERR_REQUEST" in r.content
        except httpx.HTTPError:
            pass
        assert await digest(http, a.url) == before


async def test_gzip_variants_on_peerrpc(node3):
    a, tokens = node3
    good = json.dumps(["rid", a.node.rpc_key, {"action": "status"}]).encode()
    variants = [gzip.compress(gzip.compress(good)), gzip.compress(b""), b"",
                gzip.compress(good) + gzip.compress(good), gzip.compress(good)[:-4],
                gzip.compress(good) + b"\x00" * 100, b"\x1f\x8b", gzip.compress(b"[" * 500_000)]
    async with client(local_token=False) as http:
        for body in variants:
            reply = await rpc(http, a, None, gz=True, raw=body)
            assert reply[1] is not None and reply[1].startswith("ERR_REQUEST"), reply
        reply = await rpc(http, a, None, gz=True, raw=gzip.compress(good))
        assert reply[1] is None


async def test_pipelining_many_requests_on_one_connection(node3):
    a, _ = node3
    host, port = a.url.split("://")[1].rsplit(":", 1)
    count = 900  # hypercorn closes a connection after 1,000 requests
    stream = await trio.open_tcp_stream(host, int(port))
    request = b"GET /book HTTP/1.1\r\nHost: x\r\n\r\n"
    got = bytearray()

    async def reader():
        with trio.move_on_after(20):
            while got.count(b"HTTP/1.1 200") < count:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                got.extend(chunk)

    async with client() as http, trio.open_nursery() as n:
        n.start_soon(reader)
        await stream.send_all(request * count)
        # /status answers meanwhile, within a second
        started = time.monotonic()
        await digest(http, a.url)
        assert time.monotonic() - started < LIVENESS_S
    await stream.aclose()
    assert got.count(b"HTTP/1.1 200") == count


# -- (3) bounds measured on a node process -----------------------------------
@pytest.fixture
async def proc(tmp_path):
    node = NodeProcess(str(tmp_path / "n"), extra=("--rpc-listen", "127.0.0.1:0"))
    await node.start()
    try:
        yield node
    finally:
        node.kill()


def nested_push(groups: int, per: int) -> bytes:
    """A blocks message of ``groups`` blocks of ``per`` zero bytes each: it passes the
    scan (under a million items, depth 3) and is refused only once cbor2 built it."""
    inner = b"\x9a" + per.to_bytes(4, "big") + b"\x00" * per
    return (b"\xa4\x61v\x01\x64kind\x66blocks\x66blocks" + bytes([0x80 + groups])
            + inner * groups + b"\x66claims\x80")


PROBE_EVERY_S = 0.05  # the cadence of /status probes while an attack runs
PUSHES = 40  # concurrent pushes of a million items each
STALL_FRACTION = 2  # /status may wait for a few of the pushes' decodes, not half of them
TRICKLE_S = 1.0  # a slowloris sends one byte this often


async def status_latencies(http, url: str, stop: trio.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        with trio.move_on_after(10):
            await http.get(url + "/status")
        out.append(time.monotonic() - started)
        await trio.sleep(PROBE_EVERY_S)


async def test_concurrent_large_pushes_stay_under_300_mb(proc):
    body = b"\x00" * (60 * 1024 * 1024)  # refused by the scan, once read whole
    async with httpx.AsyncClient(timeout=60) as http:
        before = await digest(http, proc.url)

        async def push():
            async with httpx.AsyncClient(timeout=60) as h:
                r = await h.post(proc.url + "/peer/push", content=body)
                assert 400 <= r.status_code < 500 or r.status_code == 503

        async with trio.open_nursery() as n:
            for _ in range(6):
                n.start_soon(push)
        hwm = vm_kb(proc.proc.pid, "VmHWM") // 1024
        assert await digest(http, proc.url) == before
    print(f"\n6 x 60 MB pushes at once: VmHWM {hwm} MB")
    assert hwm < MAX_RSS_MB


async def test_pushes_of_a_million_items_do_not_stall_status(proc):
    body = nested_push(10, 99_990)
    latencies: list[float] = []
    stop = trio.Event()
    async with httpx.AsyncClient(timeout=60) as http:
        before = await digest(http, proc.url)

        async def push():
            async with httpx.AsyncClient(timeout=60) as h:
                r = await h.post(proc.url + "/peer/push", content=body)
                assert r.status_code == 400

        async with trio.open_nursery() as n:
            n.start_soon(status_latencies, http, proc.url, stop, latencies)
            started = time.monotonic()
            async with trio.open_nursery() as pushes:
                for _ in range(PUSHES):
                    pushes.start_soon(push)
            attack_s = time.monotonic() - started
            stop.set()
        assert await digest(http, proc.url) == before
    print(f"\n{PUSHES} pushes of 1M items in {attack_s:.1f}s: slowest /status "
          f"{max(latencies):.2f}s")
    # The decodes wait their turn on a worker thread, but cbor2 holds the interpreter
    # for a whole decode, so /status waits for a few of them: alone, its slowest is
    # ~1/15 of the attack (0.6 s of 10 s), up to 1/4 (2.8 s of 10.5 s) on a machine
    # loaded by others (an absolute 3 s bound failed there). What must never come back
    # is the unbounded stall: /status queued behind the pushes, for most of the attack.
    # Measured against the attack's own length, the bound holds on a slower machine.
    assert max(latencies) < attack_s / STALL_FRACTION


async def test_slowloris_on_the_peerrpc_port_is_cut(proc):
    """200 connections trickle headers or bodies into the PeerRPC port: /status and
    PeerRPC keep answering within 1 s and every slow connection is cut within seconds."""
    async with httpx.AsyncClient(timeout=10) as http:
        status = (await http.get(proc.url + "/status")).json()
        port = int(status["rpc"].rsplit(":", 1)[1])
        cut: list[float] = []
        latencies: list[float] = []
        stop = trio.Event()

        async def trickle(body: bool) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            since = time.monotonic()
            head = b"POST / HTTP/1.1\r\nHost: x\r\n" + (
                b"Content-Length: 100000\r\n\r\n" if body else b"")
            await stream.send_all(head)
            with trio.move_on_after(30):
                try:
                    while True:
                        await stream.send_all(b"[" if body else b"X")
                        if body:
                            with trio.move_on_after(1):
                                if not await stream.receive_some():
                                    break
                        else:
                            await trio.sleep(TRICKLE_S)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            cut.append(time.monotonic() - since)
            await stream.aclose()

        async with trio.open_nursery() as n:
            n.start_soon(status_latencies, http, proc.url, stop, latencies)
            async with trio.open_nursery() as slow:
                for i in range(200):
                    slow.start_soon(trickle, i % 2 == 0)
            stop.set()
        started = time.monotonic()
        r = await http.post(f"http://127.0.0.1:{port}/",
                            content=json.dumps(["r", "crdtbook:default:rpc",
                                                {"action": "status"}]))
        assert r.status_code == 200 and r.json()[1] is None
        assert time.monotonic() - started < LIVENESS_S
    print(f"\nslowloris on PeerRPC: cut after at most {max(cut):.1f}s, "
          f"slowest /status {max(latencies):.2f}s")
    assert max(cut) < 20 and max(latencies) < LIVENESS_S


# -- registry flood -------------------------------------------------------------
async def announce_from(url: str, key: str, port: int, source: str) -> bytes:
    host, p = url.split("://")[1].rsplit(":", 1)
    body = json.dumps({"data": [key, port]}).encode()
    return await raw_from(host, int(p), source, b"POST /announce HTTP/1.1\r\nHost: x\r\n"
                          + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                          + body)


async def raw_from(host: str, port: int, source: str, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream(host, port, local_address=source)
    await stream.send_all(data)
    got = b""
    with trio.move_on_after(5):
        while chunk := await stream.receive_some():
            got += chunk
    await stream.aclose()
    return got


@pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                    reason="binds 127.0.x.y sources (Linux loopback)")
async def test_registry_flood_from_many_loopback_sources_keeps_the_real_node(nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    own = a.url.split("://")[1]
    await eventually(lambda: own in a.node.registry._entries.get(a.node.key, {}))
    limit = trio.CapacityLimiter(50)

    async def one(i: int) -> None:
        async with limit:
            await announce_from(a.url, a.node.key, 1 + i, f"127.0.{1 + i // 250}.{1 + i % 250}")

    async with trio.open_nursery() as n:
        for i in range(1100):
            n.start_soon(one, i)
    async with client() as http:
        before = time.monotonic()
        await digest(http, a.url)
        assert time.monotonic() - before < LIVENESS_S
    assert own in a.node.registry._entries.get(a.node.key, {})
