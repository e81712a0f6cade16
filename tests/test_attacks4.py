"""Attacks on the node's newer front doors (WebSocket /ws, the web page, /metrics,
/openapi.json) against real nodes.

Each test is one attack and passes when the node held: the attacker got a
clear refusal, nothing changed that should not have, memory stayed bounded,
and the node kept serving everyone else. The ones that once got through are
fixed in the node; their tests stay here.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Pong, TextMessage
from wsproto.events import Request as WsRequest

from node import asgi, logs
from node.api import websocket
from node.store import accounts

from . import nodes
from .procs import NodeProcess
from .test_accounts import add
from .test_resources import vm_kb
from .wsclient import BookView, Client, book_of, connect, ws_url

POLL_S = 0.05  # how often a test samples a node while it waits (within a deadline)


@pytest.fixture
async def proc(tmp_path):
    """A node process without a rate limit (memory is measured on its own process)."""
    node = NodeProcess(str(tmp_path / "n"), extra=("--rate-limit", "0"))
    await node.start()
    try:
        yield node
    finally:
        node.kill()


def nested_pad(size: int) -> list:
    """A JSON value that costs ~20 times its text once parsed: many empty lists."""
    return [[]] * (size // 4)


# -- floods ----------------------------------------------------------------------
SWEEP = 3500  # resting sells each sweeping buy takes (~950 KB of answer; the client reads 1 MiB)
SWEEPS = 4
PADS = 300  # padded commands sent once the node stopped reading the connection
PAD_BYTES = 60_000
MAX_GROWTH_MB = 100  # what one connection may add to the node's peak memory


async def test_commands_read_ahead_of_a_stuck_connection_stay_small(proc):
    """A client that stops reading makes the node stop processing its commands; the
    commands it keeps sending (each a 60 KB frame of nested empty arrays, ~1 MB once
    parsed) must not pile up parsed in the node's memory."""
    pid = proc.proc.pid
    token = accounts.read(proc.data_dir)
    async with nodes.client() as http:
        for _ in range(SWEEPS):
            sells = [{"side": "sell", "qty": "1", "price": "10"}] * SWEEP
            r = await http.post(proc.url + "/orders", json=sells, timeout=60)
            assert r.status_code == 201, r.text
        base = vm_kb(pid, "VmHWM") // 1024
        pad = json.dumps({"op": "ping", "id": 1, "pad": nested_pad(PAD_BYTES)})
        async with connect(proc.url, token=token, rcvbuf=4096) as ws:
            for i in range(SWEEPS):  # answers of ~1 MB each, never read: the node stops reading
                await ws.send(op="order", id=i, order={"side": "buy", "qty": str(SWEEP),
                                                       "price": "10"})
            with trio.move_on_after(10):  # our sends block once the node stops reading
                for _ in range(PADS):
                    await ws.conn.send_message(pad)
            peak = vm_kb(pid, "VmHWM") // 1024
            r = await http.get(proc.url + "/status", timeout=5)  # everyone else is served
            assert r.status_code == 200
    print(f"\nnode peak memory: {base} MB before, {peak} MB with a stuck connection")
    assert peak - base < MAX_GROWTH_MB


# -- auth ------------------------------------------------------------------------
async def two_accounts(nursery, tmp_path):
    a = await nodes.start(nursery, data_dir=str(tmp_path / "a"))
    async with nodes.client() as http:
        tokens = {name: await add(http, a, name) for name in ("alice", "bob")}
    return a, tokens


def is_reset(channel: str):
    return lambda m: m.get("type") == "reset" and m.get("channel") == channel


async def place_for(http, a, account: str, price: str) -> str:
    r = await http.post(a.url + "/orders", headers=a.admin,
                        json={"side": "buy", "qty": "1", "price": price, "account": account})
    assert r.status_code == 201, r.text
    return r.json()["order"]["id"]


async def test_a_revoked_accounts_open_socket_stops_trading_and_watching(nursery, tmp_path):
    a, tokens = await two_accounts(nursery, tmp_path)
    async with nodes.client() as http, connect(a.url, token=tokens["alice"]) as ws:
        assert (await ws.call(op="subscribe", id=1, channel="orders"))["ok"]
        assert (await ws.next())["orders"] == []
        first = await place_for(http, a, "alice", "5")
        seen = await ws.until(lambda m: m.get("type") == "order")
        assert seen["order"]["id"] == first
        r = await http.delete(a.url + "/accounts/alice", headers=a.admin)
        assert r.status_code == 200
        reset = await ws.until(is_reset("orders"))  # the watch ends with the token
        assert reset["reason"] == "unauthorized"
        later = await place_for(http, a, "alice", "6")
        order = await ws.call(op="order", id=2, order={"side": "buy", "qty": "1",
                                                       "price": "7"})
        assert (order["ok"], order["status"]) == (False, 401)
        cancel = await ws.call(op="cancel", id=3, order=first)
        assert (cancel["ok"], cancel["status"]) == (False, 401)
        again = await ws.call(op="subscribe", id=4, channel="orders")
        assert (again["ok"], again["status"]) == (False, 401)
        assert all(m.get("order", {}).get("id") != later for m in ws.seen)
        r = await http.get(a.url + f"/orders/{first}", headers=a.admin)
        assert r.json()["status"] == "open"
    await a.stop()


async def test_auth_as_another_account_mid_stream_ends_the_old_watch(nursery, tmp_path):
    a, tokens = await two_accounts(nursery, tmp_path)
    async with nodes.client() as http, connect(a.url) as ws:
        assert (await ws.call(op="auth", id=1, token=tokens["alice"]))["ok"]
        assert (await ws.call(op="subscribe", id=2, channel="orders"))["ok"]
        assert (await ws.next())["orders"] == []
        switched = await ws.call(op="auth", id=3, token=tokens["bob"])
        assert switched["result"] == {"account": "bob"}
        await ws.until(is_reset("orders"))  # bob may not watch alice's orders
        hers = await place_for(http, a, "alice", "5")
        mine = await place_for(http, a, "bob", "6")
        assert (await ws.call(op="subscribe", id=4, channel="orders"))["ok"]
        snapshot = await ws.until(lambda m: m.get("type") == "snapshot")
        assert [o["id"] for o in snapshot["orders"]] == [mine]
        pong = await ws.call(op="ping", id=5)  # everything before it has been seen
        assert pong["type"] == "pong"
        assert all(m.get("order", {}).get("id") != hers for m in ws.seen)
        # a failed auth leaves the connection as it was: still bob
        wrong = await ws.call(op="auth", id=6, token=tokens["alice"] + "x")
        assert (wrong["ok"], wrong["status"]) == (False, 401)
        other = await ws.call(op="cancel", id=7, order=hers)
        assert (other["ok"], other["status"]) == (False, 403)
    await a.stop()


async def test_tokens_in_the_url_wrong_tokens_and_other_accounts(nursery, tmp_path):
    a, tokens = await two_accounts(nursery, tmp_path)
    async with nodes.client() as http:
        hers = await place_for(http, a, "alice", "5")
        url = ws_url(a.url) + f"?token={tokens['alice']}&access_token={tokens['alice']}"
        async with open_websocket_url(url) as conn:  # a token in the URL is never read
            ws = Client(conn)
            refused = await ws.call(op="subscribe", id=1, channel="orders")
            assert (refused["ok"], refused["status"]) == (False, 401)
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(a.url, token="crdtbook-acct-" + "0" * 40):
                pass
        assert rejected.value.status_code == 401
        async with connect(a.url, token=tokens["bob"]) as ws:
            peek = await ws.call(op="subscribe", id=1, channel="orders", account="alice")
            assert (peek["ok"], peek["status"]) == (False, 403)
            cancel = await ws.call(op="cancel", id=2, order=hers)
            assert (cancel["ok"], cancel["status"]) == (False, 403)
            forged = await ws.call(op="order", id=3, order={"side": "sell", "qty": "1",
                                                           "price": "9", "account": "alice"})
            assert (forged["ok"], forged["status"]) == (False, 403)
        r = await http.get(a.url + f"/orders/{hers}", headers=a.admin)
        assert r.json()["status"] == "open"
        async with connect(a.url, token=a.admin["Authorization"].split()[1]) as ws:
            vague = await ws.call(op="subscribe", id=1, channel="orders")
            assert (vague["ok"], vague["status"]) == (False, 400)
            assert (await ws.call(op="subscribe", id=2, channel="orders",
                                  account="alice"))["ok"]
            assert [o["id"] for o in (await ws.next())["orders"]] == [hers]
    await a.stop()


READERS = 100  # connections that subscribe and never read
RESUBSCRIBES = 40  # book snapshots (~40 KB each) asked for by each of them
MAX_MB_PER_READER = 0.6  # the node's peak memory per such connection, on average


async def test_many_connections_that_never_read_share_a_bounded_queue(proc):
    """Each connection may queue 1 MiB for its client; 1,000 of them must not take a GB."""
    pid = proc.proc.pid
    async with nodes.client() as http:
        levels = [{"side": "buy", "qty": "1", "price": str(1000 + i)} for i in range(1000)]
        levels += [{"side": "sell", "qty": "1", "price": str(3000 + i)} for i in range(1000)]
        assert (await http.post(proc.url + "/orders", json=levels, timeout=60)).status_code \
            == 201
        base = vm_kb(pid, "VmHWM") // 1024
        subscribed = [0]

        async def stuck() -> None:
            try:
                async with connect(proc.url, rcvbuf=4096) as ws:
                    for i in range(RESUBSCRIBES):
                        await ws.send(op="subscribe", id=i, channel="book", depth=1000)
                    subscribed[0] += 1
                    await trio.sleep_forever()
            except BaseException as exc:  # the node may close it (1013): fine
                if isinstance(exc, trio.Cancelled):
                    raise
                subscribed[0] += 1

        async with trio.open_nursery() as nursery:
            for _ in range(READERS):
                nursery.start_soon(stuck)
            # a liveness bound: 9 s seen at load 4-5, the node building depth-1000 snapshots
            await nodes.eventually(lambda: subscribed[0] == READERS, timeout=60)
            async with connect(proc.url) as ws:  # a reader is served meanwhile
                assert (await ws.call(op="subscribe", id=1, channel="book", depth=5))["ok"]
                assert (await ws.next())["type"] == "snapshot"
            r = await http.get(proc.url + "/status", timeout=5)
            assert r.status_code == 200
            peak = vm_kb(pid, "VmHWM") // 1024
            nursery.cancel_scope.cancel()
    print(f"\nnode peak memory: {base} MB, {peak} MB with {READERS} connections that never "
          "read")
    assert peak - base < READERS * MAX_MB_PER_READER


OPEN_ORDERS = 3500  # an orders snapshot of ~1.2 MB: more than a connection's queue


async def test_an_account_with_many_open_orders_gets_its_snapshot(nursery):
    a = await nodes.start(nursery, rate_limit=0)
    async with nodes.client() as http:
        bids = [
            {"side": "buy", "qty": "1", "price": str(1 + i % 500)} for i in range(OPEN_ORDERS)]
        assert (await http.post(a.url + "/orders", json=bids, timeout=60)).status_code == 201
    headers = [(b"authorization", f"Bearer {a.token}".encode())]
    async with open_websocket_url(ws_url(a.url), extra_headers=headers,
                                  max_message_size=16 * 1024 * 1024) as conn:
        ws = Client(conn)
        assert (await ws.call(op="subscribe", id=1, channel="orders"))["ok"]
        snapshot = await ws.next()
        assert snapshot["type"] == "snapshot", snapshot
        assert len(snapshot["orders"]) == OPEN_ORDERS
    await a.stop()


# -- malformed input: every frame answered, no bug, nothing changed ------------------
@pytest.fixture
def bugs(monkeypatch) -> list:
    """Every ``*.bug`` the node logs (a bug: never what a client sent)."""
    seen: list = []
    real = logs.error

    def error(event: str, **fields) -> None:
        if event.endswith(".bug"):
            seen.append((event, fields))
        real(event, **fields)

    monkeypatch.setattr(logs, "error", error)
    return seen


def raw_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame (the mask is zero): for frames no library would send."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def raw_ws(url: str, accepted: bool = True) -> tuple[trio.SocketStream, WSConnection]:
    """A WebSocket client of our own framing (``accepted``: once the node accepted)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    client = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(client.send(WsRequest(host=host, target="/ws")))
    with trio.fail_after(10):
        while accepted:
            client.receive_data(await stream.receive_some(65536))
            accepted = not any(isinstance(e, AcceptConnection) for e in client.events())
    return stream, client


async def close_code(stream: trio.SocketStream, client: WSConnection) -> int | None:
    """Read until the node closes; its close code (None: it just hung up)."""
    with trio.fail_after(10):
        while True:
            data = await stream.receive_some(65536)
            client.receive_data(data or None)
            for event in client.events():
                if isinstance(event, CloseConnection):
                    return event.code
            if not data:
                return None


JSON_BOMBS = [
    "[" * 30_000 + "]" * 30_000,  # nested too deeply
    '{"op": "ping", "id": 1, "x": ' + "[" * 20_000 + "]" * 20_000 + "}",
    '{"op": "ping", "id": ' + "9" * 60_000 + "}",  # a 60,000-digit number
    '{"op": "ping", "id": 1, "x": ' + "1" * 5_000 + "}",
    '{"op": "ping", "op": "auth", "id": 1}',  # a key twice
    '{"op": "ping", "id": 1.5}', '{"op": "ping", "id": NaN}', '{"op": "ping", "id": -Infinity}',
    '{"op": "ping", "id": 1e400}', '"just a string"', "null", "[]", "", " ", "\x00",
    '{"op": "subscribe", "id": 2, "channel": "book", "depth": ' + "7" * 4000 + "}",
    '{"op": "order", "id": 3, "order": {"side": "buy", "qty": "1' + "0" * 5000
    + '", "price": "1"}}',
    '{"op": "cancel", "id": 4, "order": "' + "a" * 60_000 + ':1"}',
    '{"op": "auth", "id": 5, "token": "' + "\u00e9" * 20_000 + '"}',
    '{"op": "\\ud800", "id": "\\udfff"}', '{"op": "ping", "id": "' + "\u0000" * 64 + '"}',
]


async def test_json_bombs_and_odd_values_over_the_socket(nursery, bugs):
    a = await nodes.start(nursery)
    before = a.node.replica.digest()
    async with connect(a.url, token=a.token) as ws:
        for text in JSON_BOMBS:
            await ws.conn.send_message(text)
            answer = await ws.until(lambda m: m.get("type") in ("answer", "pong"))
            assert answer.get("ok") is False or answer["type"] == "pong", (text[:40], answer)
            assert answer.get("status", 400) < 500, (text[:40], answer)
        await ws.conn.send_message(b'{"op": "ping", "id": 1}')  # a binary frame
        binary = await ws.until(lambda m: m.get("type") == "answer")
        assert (binary["status"], binary["error"]) == (400, "bad_frame")
        assert (await ws.call(op="ping", id="still"))["type"] == "pong"
    assert a.node.replica.digest() == before and not bugs
    await a.stop()


async def test_invalid_utf8_fragments_past_the_limit_and_many_tiny_fragments(nursery, bugs):
    a = await nodes.start(nursery)
    stream, client = await raw_ws(a.url)
    await stream.send_all(raw_frame(0x1, b'{"op": "ping", "id": "\xff\xfe"}'))
    # invalid UTF-8: that connection ends (1007, or hypercorn just hangs up), nothing else
    assert await close_code(stream, client) in (1006, 1007, None)
    await stream.aclose()

    stream, client = await raw_ws(a.url)  # fragments, each small, 200 KB together
    chunk = b" " * 10_000
    await stream.send_all(raw_frame(0x1, b'{"op": "ping", "id": 1' + chunk, fin=False))
    with trio.move_on_after(5):  # the node may close before it read them all
        for _ in range(20):
            await stream.send_all(raw_frame(0x0, chunk, fin=False))
    assert await close_code(stream, client) == 1009
    await stream.aclose()

    stream, client = await raw_ws(a.url)  # 5,000 one-byte fragments: one message, fine
    text = b'{"op": "ping", "id": "tiny"}' + b" " * 4972
    frames = raw_frame(0x1, text[:1], fin=False)
    frames += b"".join(raw_frame(0x0, text[i:i + 1], fin=False) for i in range(1, len(text)))
    frames += raw_frame(0x0, b"", fin=True)
    await stream.send_all(frames)
    pong = None
    with trio.fail_after(10):
        while pong is None:
            client.receive_data(await stream.receive_some(65536))
            pong = next((json.loads(e.data) for e in client.events()
                         if isinstance(e, TextMessage)), None)
    assert pong == {"type": "pong", "id": "tiny"}
    await stream.aclose()
    async with connect(a.url) as ws:
        assert (await ws.call(op="ping", id=1))["type"] == "pong"
    assert not bugs
    await a.stop()


CLOSE_RACES = 40  # connections the node closes right after their handshake


async def test_connections_closed_at_once_never_stop_the_node(nursery):
    """The node's first ping races its close of a connection that sent an invalid frame
    right after the handshake (hypercorn sends an EOF outside its send lock)."""
    a = await nodes.start(nursery)
    for _ in range(CLOSE_RACES):
        with contextlib.suppress(trio.BrokenResourceError):
            stream, client = await raw_ws(a.url, accepted=False)
            await stream.send_all(raw_frame(0x1, b"\xff"))
            with trio.fail_after(10):
                while await stream.receive_some(65536):
                    pass
        await stream.aclose()
        assert not a.done.is_set(), "the node stopped"
    async with nodes.client() as http:
        assert (await http.get(a.url + "/status")).status_code == 200
    await a.stop()


# -- churn and caps ------------------------------------------------------------------
CYCLES = 10_000  # subscribe/unsubscribe pairs one client pipelines


async def test_ten_thousand_subscribe_cycles_leave_nothing_behind(nursery, bugs):
    a = await nodes.start(nursery)
    hub = a.node.streams
    async with nodes.client() as http, connect(a.url) as watcher, connect(a.url) as churner:
        assert (await watcher.call(op="subscribe", id=1, channel="book", depth=7))["ok"]
        await watcher.next()
        channels = [("book", {"depth": 3}), ("trades", {}), ("status", {}), ("book", {})]

        async def churn() -> None:
            for i in range(CYCLES):
                channel, extra = channels[i % len(channels)]
                await churner.send(op="subscribe", id=2 * i, channel=channel, **extra)
                await churner.send(op="unsubscribe", id=2 * i + 1, channel=channel)
            await churner.send(op="ping", id="done")

        async with trio.open_nursery() as inner:
            inner.start_soon(churn)
            answers = 0
            with trio.fail_after(60):
                while True:
                    message = await churner.next()
                    if message.get("type") == "pong":
                        break
                    if message.get("type") == "answer":
                        assert message["ok"], message
                        answers += 1
        assert answers == 2 * CYCLES
        assert hub.subscription_count() == 1 and list(hub.books) == [7]
        assert hub.tape is None and not hub.status
        r = await http.post(a.url + "/orders", json={"side": "sell", "qty": "2", "price": "9"})
        assert r.status_code == 201
        update = await watcher.until(lambda m: m.get("channel") == "book")
        assert (update["seq"], update["asks"]) == (2, [["9", "2"]])
    await nodes.eventually(lambda: hub.connections == 0)
    assert hub.subscription_count() == 0 and hub.outgoing.chars == 0 and not bugs
    await a.stop()


HALF_OPEN = 20  # connections that send half a handshake and wait


async def test_past_the_cap_and_half_open_handshakes_status_answers(nursery, monkeypatch):
    monkeypatch.setattr(websocket, "MAX_CONNECTIONS", 30)
    a = await nodes.start(nursery)
    host, port = a.url.split("://", 1)[1].rsplit(":", 1)
    half = []
    for _ in range(HALF_OPEN):
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        half.append(stream)
    async with contextlib.AsyncExitStack() as stack, nodes.client() as http:
        for _ in range(30):
            await stack.enter_async_context(connect(a.url))
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(a.url):
                pass
        assert rejected.value.status_code == 503
        started = trio.current_time()
        r = await http.get(a.url + "/status")
        assert r.status_code == 200 and trio.current_time() - started < nodes.LIVENESS_S
        with trio.fail_after(asgi.HEADER_TIMEOUT_S + 5):  # the half-open ones are cut
            for stream in half:
                with contextlib.suppress(trio.BrokenResourceError):
                    while await stream.receive_some(65536):
                        pass
                await stream.aclose()
    await nodes.eventually(lambda: a.node.streams.connections == 0)
    async with connect(a.url) as ws:
        assert (await ws.call(op="ping", id=1))["type"] == "pong"
    await a.stop()


# -- the web page --------------------------------------------------------------------
RAW_PATHS = ["/static/../node/api/app.py", "/static/%2e%2e/%2e%2e/etc/passwd",
             "/static/%252e%252e%252fapp.js", "/static/..\\..\\app.js", "/static/./app.js",
             "/static//app.js", "/static/app.js%00.css", "/static/APP.JS", "/static/app.js/",
             "/static/%2fetc%2fpasswd", "//static/app.js", "/static/app.js?../../x",
             "/static/" + "a" * 5000 + ".js", "/./", "/%2e/", "/static/favicon.svg#<script>"]


async def raw_get(url: str, target: str, extra: str = "") -> tuple[int, bytes, bytes]:
    """A GET sent as typed (no client normalises it): status, head, body."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
                          "Connection: close\r\n\r\n".encode())
    data = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.lower(), body


async def test_static_route_traversal_typed_raw(nursery):
    a = await nodes.start(nursery)
    script = (await raw_get(a.url, "/static/app.js"))[2]
    for target in RAW_PATHS:
        status, head, body = await raw_get(a.url, target)
        assert status in (200, 400, 404), (target, status)
        assert b"import " not in body and b"root:" not in body, target
        if status == 200:  # only ever a file of the page, with its policy
            assert body == script or target in ("/./", "/%2e/"), target
            assert b"content-security-policy: default-src 'self'" in head, target
    for host in ("evil.example; script-src *", "a b", "x\tconnect-src *"):
        status, head, _ = await raw_get(a.url, "/", extra=f"X-Forwarded-Host: {host}\r\n")
        assert status == 200 and b"evil" not in head
    await a.stop()


# -- /metrics and /openapi.json ------------------------------------------------------
def series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}


async def test_metrics_labels_stay_bounded_and_count_socket_refusals(nursery):
    a = await nodes.start(nursery, rate_limit=0)
    async with nodes.client() as http:
        before = series((await http.get(a.url + "/metrics")).text)
        odd = ["x", "buy sell", "<script>", "é" * 50, "a" * 300, "rate_limited 1", "\u2028"]
        for i, word in enumerate(odd * 10):  # refusals over HTTP, each a little different
            await http.post(a.url + "/orders", json={"side": word, "qty": str(i)})
            await http.delete(a.url + f"/orders/{word}:{i}")
            await http.post(f"{a.url}/announce", content=json.dumps(
                ["rid", "announce", [f"svc-{word}-{i}", 1000 + i]]).encode())
        async with connect(a.url, token=a.token) as ws:
            for i, word in enumerate(odd * 10):
                refused = await ws.call(op="order", id=i, order={"side": word, "qty": "1"})
                assert (refused["ok"], refused["error"]) == (False, "bad_order")
                cancel = await ws.call(op="cancel", id=i, order=f"{a.node.id}:{10_000 + i}")
                assert (cancel["ok"], cancel["status"]) == (False, 404)
        text = (await http.get(a.url + "/metrics")).text
        after = series(text)
        assert len(after - before) <= 4, sorted(after - before)
        refused = {s for s in after if s.startswith("crdtbook_orders_refused_total")}
        assert refused == {'crdtbook_orders_refused_total{reason="bad_order"}'}
        value = next(line for line in text.splitlines()
                     if line.startswith('crdtbook_orders_refused_total{reason="bad_order"}'))
        assert float(value.split()[1]) == 2 * len(odd) * 10  # HTTP's and the socket's
        cancels = next(line for line in text.splitlines()
                       if line.startswith('crdtbook_cancels_refused_total{reason="not_found"}'))
        assert float(cancels.split()[1]) >= len(odd) * 10
    await a.stop()


SCRAPE_LOAD = 2_000  # orders placed over one socket while /metrics is scraped


async def test_scrape_cost_under_order_load(nursery):
    a = await nodes.start(nursery, rate_limit=0)
    async with nodes.client() as http, connect(a.url, token=a.token) as ws:
        async def load() -> None:
            for i in range(SCRAPE_LOAD):
                await ws.send(op="order", id=i, order={"side": ("buy", "sell")[i % 2],
                                                      "qty": "1", "price": str(10 + i % 7)})
        times = []
        async with trio.open_nursery() as inner:
            inner.start_soon(load)
            answered = 0
            while answered < SCRAPE_LOAD:
                message = await ws.next()
                answered += message.get("type") == "answer"
                if answered % 200 == 0:
                    started = trio.current_time()
                    r = await http.get(a.url + "/metrics")
                    times.append(trio.current_time() - started)
                    assert r.status_code == 200
        doc = await http.get(a.url + "/openapi.json")
        assert doc.status_code == 200 and doc.json()["openapi"].startswith("3.1")
    print(f"\n/metrics under load: {len(times)} scrapes, worst {max(times) * 1000:.1f} ms, "
          f"{len(r.content)} bytes")
    assert max(times) < 2.0
    await a.stop()


# -- consistency ---------------------------------------------------------------------
CROSSING = 300  # orders each of two nodes takes over a socket, crossing at random


class Tape:
    """A trades subscriber's view, checking the channel's promises as it goes."""

    def __init__(self, snapshot: dict) -> None:
        self.seq = snapshot["seq"]
        self.held = {t["id"]: t for t in snapshot["trades"]}
        self.final = {t["id"] for t in snapshot["trades"] if t["final"]}

    def apply(self, m: dict) -> None:
        assert m["seq"] == self.seq + 1, "a gap in the trades' sequence"
        self.seq = m["seq"]
        if m["type"] == "trade":
            assert m["trade"]["id"] not in self.held, "a trade id held twice"
            self.held[m["trade"]["id"]] = m["trade"]
        elif m["type"] == "retract":
            for ident in m["ids"]:
                assert ident not in self.final, "a final trade retracted"
                self.held.pop(ident)
        elif m["type"] == "final":
            for ident in m["ids"]:
                assert ident in self.held and ident not in self.final, "final twice"
                self.final.add(ident)


async def drain(ws, apply) -> None:
    """Apply what already came (no wait beyond a poll's cadence)."""
    with trio.move_on_after(POLL_S):
        while True:
            apply(await ws.next())


async def test_two_nodes_crossing_orders_keep_book_and_tape_promises(nursery):
    a = await nodes.start(nursery, rate_limit=0)
    b = await nodes.start(nursery, a.url, rate_limit=0)
    rng = random.Random(4)
    async with nodes.client() as http, connect(a.url) as shallow, connect(a.url) as deep:
        assert (await shallow.call(op="subscribe", id=1, channel="book", depth=3))["ok"]
        views = {3: BookView(await shallow.next())}
        assert (await deep.call(op="subscribe", id=1, channel="book", depth=50))["ok"]
        views[50] = BookView(await deep.next())
        assert (await deep.call(op="subscribe", id=2, channel="trades"))["ok"]
        tape = Tape(await deep.next())

        def on_deep(m: dict) -> None:
            (tape.apply if m["channel"] == "trades" else views[50].apply)(m)

        async def trade_at(node) -> None:
            async with connect(node.url, token=node.token) as ws:
                for i in range(CROSSING):
                    await ws.send(op="order", id=i, order={
                        "side": rng.choice(("buy", "sell")), "qty": str(rng.randint(1, 5)),
                        "price": str(rng.randint(8, 14))})
                for i in range(CROSSING):
                    assert (await ws.answer(i))["ok"]

        async with trio.open_nursery() as inner:
            inner.start_soon(trade_at, a)
            inner.start_soon(trade_at, b)
            while inner.child_tasks:  # apply what comes while the orders go in
                await drain(deep, on_deep)
                await drain(shallow, views[3].apply)

        async def as_get_book() -> bool:
            await drain(deep, on_deep)
            await drain(shallow, views[3].apply)
            for depth, view in views.items():
                body = (await http.get(a.url + f"/book?depth={depth}")).json()
                if view.shown() != book_of(body):
                    return False
            fills = (await http.get(a.url + "/fills?limit=10000")).json()["fills"]
            return nodes.converged(a, b) and set(tape.held) == {f["id"] for f in fills} \
                and tape.final == set(tape.held)

        await nodes.eventually(as_get_book, timeout=30)
        assert len(tape.held) > 10  # the orders did cross
    await a.stop()
    await b.stop()


def task_count() -> int:
    def walk(task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)
    return walk(trio.lowlevel.current_root_task())


PINGS = 20_000  # protocol pings in one burst
ABORTED = 20  # connections reset without a close, mid-stream
GONE_S = 5.0  # how soon a reset connection's tasks must be gone (hypercorn pings every 20 s)


async def test_ping_floods_and_reset_sockets_leave_no_task_behind(nursery, bugs):
    a = await nodes.start(nursery, rate_limit=0)
    hub = a.node.streams
    stream, client = await raw_ws(a.url)
    pongs, answer = 0, None
    async with trio.open_nursery() as inner:  # read while sending: pongs come back at once
        inner.start_soon(stream.send_all, b"".join(raw_frame(0x9, b"p" * 16)
                                                   for _ in range(PINGS))
                         + raw_frame(0x1, b'{"op": "ping", "id": "after"}'))
        with trio.fail_after(30):
            while answer is None:
                client.receive_data(await stream.receive_some(65536))
                for event in client.events():
                    if isinstance(event, Pong):
                        pongs += 1
                    elif isinstance(event, TextMessage):
                        answer = json.loads(event.data)
    assert answer == {"type": "pong", "id": "after"} and pongs == PINGS
    await stream.aclose()
    await nodes.eventually(lambda: hub.connections == 0)
    baseline = task_count()
    for _ in range(ABORTED):
        stream, client = await raw_ws(a.url)
        frames = [raw_frame(0x1, json.dumps({"op": "subscribe", "id": c, "channel": c})
                            .encode()) for c in ("book", "trades", "status")]
        frames += [raw_frame(0x1, json.dumps({"op": "order", "id": i, "order": {
            "side": "buy", "qty": "1", "price": str(5 + i % 3)}}).encode()) for i in range(50)]
        await stream.send_all(b"".join(frames))
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))  # a reset, no goodbye
        await stream.aclose()
    # the connections' tasks (hypercorn's pinger included) and their slots are freed
    await nodes.eventually(lambda: hub.connections == 0 and task_count() <= baseline,
                           timeout=GONE_S)
    assert hub.subscription_count() == 0 and hub.outgoing.chars == 0 and not bugs
    async with connect(a.url) as ws:
        assert (await ws.call(op="ping", id=1))["type"] == "pong"
    await a.stop()
