"""Attacks on the node's "HTTP/1.1 only" rule (node/http1.py), against real nodes.

hypercorn turned a plain connection into HTTP/2 on its preface or on
``Upgrade: h2c``: one connection of the node's cap then ran many requests at
once. Each test here is one way to get more than one request running on a
connection, or to make the refusal cost the node something (a slot, a task, a
descriptor, a logged error); it passes when the node held: an HTTP/1.1 answer,
one request at a time and in order, nothing left behind. What got through is
fixed, its test kept here: an HTTP/1.1 request line that says ``HTTP/2.0``
was served, with hypercorn's HTTP/2 rules for a WebSocket handshake
(node/http1.py); a WebSocket handshake to the PeerRPC port or a standalone
registry got a bare 500 (node/asgi.py). Every server is attacked alike: the
node's API, its Grenache PeerRPC port, ``crdtbook registry``.
"""

from __future__ import annotations

import json
import os
import re

import h2.config
import h2.connection
import httpx
import pytest
import trio

from node.api.app import App
from node.api.peerrpc import PeerRPCApp

from .nodes import eventually, start
from .procs import NodeProcess
from .test_attacks4 import task_count
from .wsclient import connect

READ_S = 10.0  # a bound on reading one short exchange, not a measure of speed
TRICKLE_S = 0.005  # between two bytes of a request sent byte by byte
SETTLE_S = 30.0  # what a refused connection left behind is gone by then
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STATUS = b"GET /status HTTP/1.1\r\nHost: node\r\n\r\n"
STATUS_CLOSE = b"GET /status HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def h2_opening(streams: int) -> bytes:
    """What an HTTP/2 client with prior knowledge sends first: the preface, its
    settings and ``streams`` requests at once."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for i in range(streams):
        client.send_headers(1 + 2 * i, [(":method", "GET"), (":path", "/status"),
                                        (":scheme", "http"), (":authority", "node")],
                            end_stream=True)
    return client.data_to_send()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def ports(a) -> list[int]:
    """The node's two servers: its API and its Grenache PeerRPC."""
    return [port_of(a.url), a.node.rpc_port]


async def talk(port: int, *sends: bytes, gap: float = 0.0) -> bytes:
    """Send each of ``sends`` (``gap`` seconds apart), then read until the node closes
    (or ``READ_S``): everything it answered."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    if Concurrency.current is not None:
        Concurrency.current.mine.add(stream.socket.getsockname()[1])
    received = b""
    async with stream:
        for data in sends:
            await stream.send_all(data)
            if gap:
                await trio.sleep(gap)
        with trio.move_on_after(READ_S):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def answers(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The HTTP/1.1 answers in ``data``, each (status, headers, body); an answer
    without a length ends the list (its body is the rest)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"an incomplete answer: {data[:200]!r}"
        lines = head.split(b"\r\n")
        assert re.fullmatch(rb"HTTP/1\.1 \d{3} ?.*", lines[0]), lines[0]
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            out.append((status, headers, b""))
            data = rest
            continue
        if b"content-length" not in headers:
            out.append((status, headers, rest))
            break
        size = int(headers[b"content-length"])
        out.append((status, headers, rest[:size]))
        data = rest[size:]
    return out


class Concurrency:
    current: Concurrency | None = None  # the one of the test under way
    """How many requests each connection ran at once, at most (every app of a node
    started in this test: its API and its PeerRPC), and how many came from this
    test's own connections (``talk``'s; the node calls itself too, its registry)."""

    def __init__(self, monkeypatch) -> None:
        self.running: dict[tuple, int] = {}
        self.most = 0
        self.requests = 0
        self.mine: set[int] = set()  # the local ports of talk's connections
        monkeypatch.setattr(Concurrency, "current", self)
        for cls in (App, PeerRPCApp):
            self._wrap(monkeypatch, cls)

    def _wrap(self, monkeypatch, cls) -> None:
        call = cls.__call__

        async def counted(app, scope, receive, send) -> None:
            if scope["type"] == "lifespan":
                return await call(app, scope, receive, send)
            key = (scope["server"], scope["client"])  # one connection
            self.running[key] = self.running.get(key, 0) + 1
            self.most = max(self.most, self.running[key])
            self.requests += scope["client"][1] in self.mine
            try:
                await call(app, scope, receive, send)
            finally:
                self.running[key] -= 1
        monkeypatch.setattr(cls, "__call__", counted)


# -- HTTP/2's preface: 505 wherever it comes ------------------------------------------

async def test_a_preface_after_a_keep_alive_request_gets_505_after_its_answer(
        nursery, monkeypatch):
    """A client asks one HTTP/1.1 question, then switches to HTTP/2 on the same
    connection (in the same segment, or in a later one): the question is answered,
    the preface gets a 505 and the close, and none of its 50 requests runs."""
    seen = Concurrency(monkeypatch)
    a = await start(nursery)
    for port in ports(a):
        for sends in ([STATUS + h2_opening(50)], [STATUS, h2_opening(50)]):
            before = seen.requests
            got = answers(await talk(port, *sends, gap=0.2))
            assert [status for status, _, _ in got] == [200, 505], got
            assert got[1][1][b"connection"] == b"close"
            assert seen.requests - before == 1  # the GET; no HTTP/2 stream reached an app
    assert seen.most == 1


async def test_a_preface_sent_byte_by_byte_gets_505(nursery):
    """The preface's request line and blank line, a byte per segment: h11 waits for
    the whole head, and the answer is the same 505."""
    a = await start(nursery)
    head = PREFACE[:PREFACE.index(b"\r\n\r\n") + 4]
    for port in ports(a):
        got = answers(await talk(port, *[bytes([b]) for b in head], gap=TRICKLE_S))
        assert [status for status, _, _ in got] == [505]


@pytest.mark.parametrize("line", [
    b"PRI * HTTP/2.0", b"pri * HTTP/2.0", b"PRI * HTTP/2.1", b"PRI / HTTP/2.0",
    b"GET /status HTTP/2.0", b"GET /status HTTP/3.0", b"GET /status HTTP/9.9",
    b"GET /status HTTP/1.2", b"GET /status HTTP/0.9",
])
async def test_a_request_line_of_any_version_but_1_0_and_1_1_gets_505(
        nursery, monkeypatch, line):
    """h11 parses any ``HTTP/d.d`` request line, and hypercorn applied HTTP/2's rules
    to a version it does not know as 1.x (see the WebSocket test below): only the
    exact preface was refused, a lower-case ``pri`` or ``GET ... HTTP/2.0`` was
    served. Now every version but 1.0 and 1.1 gets 505, and no app sees it."""
    seen = Concurrency(monkeypatch)
    a = await start(nursery)
    for port in ports(a):
        got = answers(await talk(port, line + b"\r\nHost: node\r\n\r\n" + STATUS))
        assert [status for status, _, _ in got] == [505], got
        assert got[0][1][b"connection"] == b"close"
    assert seen.requests == 0


async def test_a_websocket_handshake_that_says_http_2_is_refused(nursery, monkeypatch):
    """``GET /ws HTTP/2.0`` with no Sec-WebSocket-Key: hypercorn checked the handshake
    by HTTP/2's rules (no key needed) and accepted it with a ``200`` whose chunked
    body was raw WebSocket frames, over HTTP/1.1's framing. Now: 505, closed, no
    WebSocket."""
    seen = Concurrency(monkeypatch)
    a = await start(nursery)
    got = await talk(port_of(a.url), b"GET /ws HTTP/2.0\r\nHost: node\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert [status for status, _, _ in answers(got)] == [505], got[:200]
    assert seen.requests == 0


async def test_the_standalone_registry_speaks_http_1_1_only(nursery):
    """``crdtbook registry`` serves through the same connection handler: HTTP/2's
    preface and a request line saying HTTP/2.0 get 505, an h2c upgrade is served
    over HTTP/1.1."""
    from node.cluster.standalone import serve_registry

    binds = await nursery.start(serve_registry, "127.0.0.1", 0, trio.Event())
    port = port_of(binds[0])
    for opening in (h2_opening(20), b"GET /lookup HTTP/2.0\r\n\r\n" + STATUS):
        got = answers(await talk(port, opening))
        assert [status for status, _, _ in got] == [505]
    got = answers(await talk(port, b"POST /lookup HTTP/1.1\r\nHost: node\r\nConnection: "
                             b"Upgrade, close\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n"
                             b'""'))
    assert [status for status, _, _ in got] == [200]


def ws_handshake(path: bytes = b"/ws") -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Key: " + WS_KEY
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def test_a_websocket_handshake_to_a_server_without_websocket_is_a_clear_404(nursery):
    """The PeerRPC port and a standalone registry serve no WebSocket: a handshake
    there got hypercorn's bare 500 (their ASGI app returned without a word), an
    error of the node's, not a client's. Now: 404 with the usual JSON error."""
    from node.cluster.standalone import serve_registry

    a = await start(nursery)
    binds = await nursery.start(serve_registry, "127.0.0.1", 0, trio.Event())
    for port in (a.node.rpc_port, port_of(binds[0])):
        got = answers(await talk(port, ws_handshake(b"/")))
        assert got[0][0] == 404, got
        body = got[0][2]
        if b"transfer-encoding" in got[0][1]:  # (chunked: the JSON is its one chunk)
            body = body.split(b"\r\n")[1]
        assert json.loads(body)["error"] == "not_found"


# -- Upgrade: h2c, every way: an HTTP/1.1 answer, and the connection stays HTTP/1.1 ----

H2C_REQUESTS = [
    b"GET /status HTTP/1.1\r\nHost: node\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: node\r\nConnection: upgrade\r\nUpgrade: H2C\r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: node\r\nConnection: keep-alive, UPGRADE\r\n"
    b"Upgrade:  h2c \r\n\r\n",
    b"GET /status HTTP/1.1\r\nHost: node\r\nUpgrade: h2c\r\n\r\n",
    b"OPTIONS /status HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    b"POST /orders HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"POST /orders HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n"
    b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n"
    b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
]


async def test_h2c_upgrades_are_answered_over_http1_and_the_connection_stays_http1(
        nursery, monkeypatch):
    """Every spelling of ``Upgrade: h2c`` (with a body or without, GET, POST, OPTIONS,
    on /ws, next to ``websocket``), followed on the same connection by a preface's
    HTTP/2 frames and a plain GET: never a 101, never an HTTP/2 frame. The upgrade
    request gets its ordinary HTTP/1.1 answer; what follows is read as HTTP/1.1
    (the frames are not a request: 400, closed), one request at a time."""
    seen = Concurrency(monkeypatch)
    a = await start(nursery)
    frames = h2_opening(5)[len(PREFACE):]  # what an upgraded client sends next
    for port in ports(a):
        for request in H2C_REQUESTS:
            got = answers(await talk(port, request, frames, gap=0.1))
            first = got[0]
            assert first[0] >= 200 and first[1].get(b"upgrade") is None, (request, got)
            if first[1].get(b"connection") == b"close":  # (a 401 before its body)
                assert len(got) == 1
                continue
            assert [status for status, _, _ in got][1:] == [400], (request, got)
            got = answers(await talk(port, request + STATUS_CLOSE))
            assert len(got) == 2 and got[1][0] == 200, (request, got)
    assert seen.most == 1


async def test_an_h2c_upgrade_next_to_a_websocket_upgrade_is_a_working_websocket(nursery):
    """``Upgrade: h2c`` and ``Upgrade: websocket`` as two headers: hypercorn takes the
    last; the WebSocket works (a ping is answered), and nothing speaks HTTP/2."""
    a = await start(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(a.url))
    async with stream:
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\n"
                              b"Upgrade: h2c\r\nUpgrade: websocket\r\nSec-WebSocket-Key: "
                              + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        got = b""
        with trio.fail_after(READ_S):
            while b"\r\n\r\n" not in got:
                got += await stream.receive_some(65536)
        assert got.startswith(b"HTTP/1.1 101 ") and b"upgrade: websocket" in got.lower()
        # a masked text frame (zero mask): {"op":"ping","id":1}
        payload = b'{"op":"ping","id":1}'
        await stream.send_all(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        with trio.fail_after(READ_S):
            while b'"pong"' not in got:
                got += await stream.receive_some(65536)


# -- HTTP/1.1 pipelining: one request at a time, every answer, in order ---------------

PIPELINED = 300


async def test_pipelined_requests_run_one_at_a_time_and_are_answered_in_order(
        nursery, monkeypatch):
    """300 requests in one send, to each server: each is answered, in the order
    asked, and no connection ever ran two at once (h11 reads the next only once
    the answer is out)."""
    seen = Concurrency(monkeypatch)
    a = await start(nursery)
    api = b"".join(b"GET /nope-%d HTTP/1.1\r\nHost: node\r\n\r\n" % i
                   for i in range(PIPELINED))
    got = answers(await talk(port_of(a.url), api + STATUS_CLOSE))
    assert len(got) == PIPELINED + 1
    for i, (status, _, body) in enumerate(got[:-1]):
        assert status == 404 and f"no route /nope-{i}\"".encode() in body, (i, body)
    assert got[-1][0] == 200
    rpc = b"".join(b"POST / HTTP/1.1\r\nHost: node\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(b'"%d"' % i), b'"%d"' % i) for i in range(PIPELINED))
    got = answers(await talk(a.node.rpc_port, rpc + STATUS_CLOSE))
    assert len(got) == PIPELINED + 1 and all(status == 200 for status, _, _ in got)
    assert seen.most == 1
    assert seen.requests == 2 * (PIPELINED + 1)


# -- the refusal costs nothing: slots, tasks, descriptors, logs -----------------------

REFUSED = 2_000


async def test_refused_prefaces_give_their_connection_slots_back(nursery):
    """A node with a cap of 4 connections refuses 50 prefaces (on both servers: one
    cap), then serves 4 keep-alive connections at once: each refusal gave its slot
    back (one kept would leave the fourth waiting in the backlog), and the node's
    tasks are back to what they were."""
    a = await start(nursery, max_connections=4)
    async with httpx.AsyncClient(timeout=READ_S) as http:
        await http.get(a.url + "/status")
    tasks = task_count()
    for i in range(50):
        got = answers(await talk(ports(a)[i % 2], h2_opening(3)))
        assert [status for status, _, _ in got] == [505]
    streams = [await trio.open_tcp_stream("127.0.0.1", port_of(a.url)) for _ in range(4)]
    try:
        with trio.fail_after(READ_S):
            for stream in streams:
                await stream.send_all(STATUS)
            for stream in streams:
                got = b""
                while b"\r\n\r\n" not in got:
                    got += await stream.receive_some(65536)
                assert got.startswith(b"HTTP/1.1 200 ")
    finally:
        for stream in streams:
            await stream.aclose()
    await eventually(lambda: task_count() <= tasks, timeout=SETTLE_S)


class LoggedNode(NodeProcess):
    """``crdtbook node`` whose stderr (its log) is kept in a file."""

    def __init__(self, data_dir: str, log: str) -> None:
        super().__init__(data_dir, extra=("--rpc-listen", "127.0.0.1:0"))
        self.log = log

    async def start(self, timeout: float = 20.0) -> None:
        import subprocess
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.command(), cwd=os.path.dirname(os.path.dirname(
                os.path.abspath(__file__))), stdout=subprocess.PIPE, stderr=log, text=True)
        with trio.fail_after(timeout):
            line = await trio.to_thread.run_sync(self.proc.stdout.readline)
        assert " listening on " in line, line
        self.url = line.split()[-1]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/PID/fd")
async def test_two_thousand_refused_prefaces_leave_no_descriptor_and_log_nothing(tmp_path):
    """2,000 connections open with HTTP/2's preface (half to each server; half of
    the clients read the 505, half hang up at once): each gets its 505 or its
    close, the process's open descriptors come back to what they were, /status
    answers, the log holds no warning, error or traceback, and the node exits 0."""
    node = LoggedNode(str(tmp_path / "n"), str(tmp_path / "stderr"))
    await node.start()
    try:
        pid = node.proc.pid
        async with httpx.AsyncClient(timeout=READ_S) as http:
            status = (await http.get(node.url + "/status")).json()
            rpc = int(status["rpc"].rsplit(":", 1)[1])
            fds = open_fds(pid)
            refused = 0

            async def one(port: int, read: bool) -> None:
                nonlocal refused
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(h2_opening(10))
                    if read:
                        got = b""
                        with trio.fail_after(READ_S):
                            while chunk := await stream.receive_some(65536):
                                got += chunk
                        refused += got.startswith(b"HTTP/1.1 505 ")

            limit = trio.CapacityLimiter(50)

            async def limited(port: int, read: bool) -> None:
                async with limit:
                    await one(port, read)

            async with trio.open_nursery() as clients:
                for i in range(REFUSED):
                    clients.start_soon(limited, (port_of(node.url), rpc)[i % 2], i % 4 < 2)
            assert refused == REFUSED // 2
            await eventually(lambda: open_fds(pid) <= fds, timeout=SETTLE_S)
            assert (await http.get(node.url + "/status")).status_code == 200
        assert await node.stop() == 0
    finally:
        node.kill()
    with open(node.log) as f:
        log = f.read()
    assert "Traceback" not in log
    assert not [line for line in log.splitlines()
                if "level=warning" in line or "level=error" in line], log[-2000:]


# -- what the change must not break ---------------------------------------------------

async def test_keep_alive_websocket_100_continue_and_http_1_0_still_work(nursery):
    a = await start(nursery)
    # keep-alive: three requests, one connection, each answered
    got = answers(await talk(port_of(a.url), STATUS, STATUS, STATUS_CLOSE, gap=0.1))
    assert [status for status, _, _ in got] == [200, 200, 200]
    # Expect: 100-continue: the 100, then the answer to the body (PeerRPC reads it)
    body = b'"x"'
    got = answers(await talk(a.node.rpc_port, b"POST / HTTP/1.1\r\nHost: node\r\n"
                             b"Expect: 100-continue\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body), body, gap=0.2))
    assert [status for status, _, _ in got] == [100, 200]
    assert b"ERR_REQUEST" in got[1][2]
    # HTTP/1.0: answered, then closed
    got = answers(await talk(port_of(a.url), b"GET /status HTTP/1.0\r\n\r\n"))
    assert [status for status, _, _ in got] == [200] and b'"replica"' in got[0][2]
    # WebSocket: the handshake and a command
    async with connect(a.url, token=a.token) as ws:
        assert (await ws.call(op="ping", id="p"))["type"] == "pong"
