"""Attacks on the third pass of order entry (httpserve.Connection, KeepAlive,
Guarded.absorb; asgi's queued bodies; WebSocket commits bounded in orders),
played against real nodes on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import struct

import trio

from node import asgi, httpserve
from node.api import websocket

from .nodes import client, eventually, start, trading_events
from .wsclient import connect

GONE_S = 15.0  # a closed connection's tasks end by then
LONG_IDLE_S = 120.0  # a keep-alive timeout longer than any wait here
ROUNDS = 40  # answers asked for on one connection: trio's scheduling order varies


class Reader:
    """A plain HTTP/1 client's reading side: one answer at a time, by its length."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def answer(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            assert data, f"closed with {bytes(self.buffer)!r} unread"
            self.buffer.extend(data)
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        if status < 200:  # an informational answer: no body
            self.buffer[:] = rest
            return status, b""
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(fields[b"content-length"])
        while len(rest) < length:
            rest += await self.stream.receive_some(65536)
        self.buffer[:] = rest[length:]
        return status, rest[:length]


async def _open(url: str) -> trio.SocketStream:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def test_expect_continue_never_puts_the_continue_inside_an_answer(nursery):
    """A request saying ``Expect: 100-continue`` makes hypercorn write a 100
    (under the send lock) while the app may answer at once: an answer's head the
    guard took without the lock must not go out before the 100, its body after."""
    a = await start(nursery)
    for _ in range(ROUNDS):
        stream = await _open(a.url)
        async with stream:
            reader = Reader(stream)
            await stream.send_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\n"
                                  b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")
            with trio.fail_after(10):
                status, body = await reader.answer()
                if status == 100:
                    status, body = await reader.answer()
            assert status == 404, (status, body)
            assert json.loads(body)["error"] == "not_found", bytes(body)


PIPELINED = 150  # requests written in one go, before any answer is read


async def test_pipelined_requests_get_their_answers_whole_and_in_order(nursery):
    """A row of requests written at once (reads, orders, refusals, some expecting a
    100) on one connection: each answer arrives whole, in the order asked, none
    mixed into another, while the guard takes heads and ends without the lock."""
    a = await start(nursery, rate_limit=0)
    token = f"Authorization: Bearer {a.token}\r\n".encode()
    requests, expected = [], []
    for i in range(PIPELINED):
        kind = i % 4
        if kind == 0:
            requests.append(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            expected.append((200, None))
        elif kind in (1, 2):
            body = json.dumps({"side": "buy", "qty": "1", "price": str(i + 1)}).encode()
            expect = b"Expect: 100-continue\r\n" if kind == 2 else b""
            requests.append(b"POST /orders HTTP/1.1\r\nHost: x\r\n" + token + expect
                            + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            expected.append((201, str(i + 1)))
        else:
            body = b'{"side": "buy", "qty": "-1", "price": "1"}'
            requests.append(b"POST /orders HTTP/1.1\r\nHost: x\r\n" + token
                            + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            expected.append((400, None))
    stream = await _open(a.url)
    async with stream:
        reader = Reader(stream)
        await stream.send_all(b"".join(requests))
        with trio.fail_after(30):
            for i, (status, price) in enumerate(expected):
                got, body = await reader.answer()
                while got == 100:
                    got, body = await reader.answer()
                assert got == status, (i, got, body)
                if price is not None:
                    assert json.loads(body)["order"]["price"] == price, (i, body)
                else:
                    json.loads(body)  # whole JSON, nothing of another answer
        assert not reader.buffer


def _tasks() -> int:
    """Every task of this trio run (the node's included: it runs in the test's)."""
    count, todo = 0, [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += 1
        for child in task.child_nurseries:
            todo.extend(child.child_tasks)
    return count


CLIENTS = 60  # connections of each kind


async def test_closed_connections_leave_no_watcher_or_task_behind(nursery, monkeypatch):
    """Connections that asked and closed, asked and half-closed, asked and reset,
    or never asked at all: once they are gone the node runs as many tasks as
    before (one keep-alive watcher per connection, ended with it, long before its
    keep-alive timeout would have closed it)."""
    monkeypatch.setattr(asgi, "HEADER_TIMEOUT_S", LONG_IDLE_S)
    monkeypatch.setattr(httpserve, "GONE_GRACE_S", LONG_IDLE_S)  # no end but their own
    a = await start(nursery)
    host, port = a.url.split("://", 1)[1].rsplit(":", 1)
    stream = await _open(a.url)  # one request first: the node's own lazy tasks start
    async with stream:
        await stream.send_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await Reader(stream).answer())[0] == 200
    await eventually(lambda: True)
    before = _tasks()

    async def asked(mode: str) -> None:
        s = await trio.open_tcp_stream(host, int(port))
        if mode == "half":  # hypercorn may drop the answer on the EOF (it did before too)
            await s.send_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            await s.send_eof()
            with trio.fail_after(GONE_S):  # but the node closes it
                try:
                    while await s.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass
        elif mode != "silent":
            await s.send_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await Reader(s).answer())[0] == 200
        if mode == "reset":
            s.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
        await s.aclose()

    async with trio.open_nursery() as clients:
        for mode in ("close", "half", "reset", "silent"):
            for _ in range(CLIENTS):
                clients.start_soon(asked, mode)
    await eventually(lambda: _tasks() <= before, timeout=GONE_S)
    async with client() as http:
        assert (await http.get(a.url + "/status")).status_code == 200


STOP_BOUND_S = 2.0 + 6.0  # hypercorn's graceful_timeout, and room for a loaded machine
TRICKLE_S = 0.05  # a slow client's pace: one byte this often


async def test_a_stop_with_every_kind_of_connection_open_ends_in_its_bound(nursery):
    """Idle keep-alive connections, request heads and bodies trickled a byte at a
    time, a client that pipelines without reading: the node stops within its
    graceful bound anyway, and closes every one of them."""
    a = await start(nursery)
    streams: list[trio.SocketStream] = []
    async with trio.open_nursery() as clients:
        async def idle() -> None:
            s = await _open(a.url)
            await s.send_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await Reader(s).answer())[0] == 200
            streams.append(s)

        async def trickle(prefix: bytes) -> None:
            s = await _open(a.url)
            streams.append(s)
            await s.send_all(prefix)
            try:
                for byte in b"{" * 1000:
                    await s.send_all(bytes([byte]))
                    await trio.sleep(TRICKLE_S)
            except trio.BrokenResourceError:
                pass  # the node closed it: fine

        async def never_reads() -> None:
            s = await _open(a.url)
            streams.append(s)
            with trio.move_on_after(1):  # (our sends block once the node stops reading)
                try:
                    while True:
                        await s.send_all(b"GET /book HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
                except trio.BrokenResourceError:
                    pass  # the node closed it: fine

        for _ in range(CLIENTS // 2):
            clients.start_soon(idle)
            clients.start_soon(trickle, b"GET /status HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        for _ in range(5):
            clients.start_soon(trickle, b"POST /orders HTTP/1.1\r\nHost: x\r\n"
                               + b"Authorization: Bearer %s\r\n" % a.token.encode()
                               + b"Content-Length: 1000\r\n\r\n")
        clients.start_soon(never_reads)
        await eventually(lambda: len(streams) == CLIENTS + 6)
        begun = trio.current_time()
        a.shutdown.set()
        with trio.fail_after(STOP_BOUND_S + 5):
            await a.done.wait()
        took = trio.current_time() - begun
        clients.cancel_scope.cancel()
    assert took < STOP_BOUND_S, took
    for s in streams:  # every connection was closed (an answer may come first)
        with trio.fail_after(5):
            try:
                while await s.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
        await s.aclose()


BODY_PACE_S = 0.002  # a body sent a byte or a few at a time, this often


async def test_bodies_split_cut_or_lying_about_their_length_place_nothing_wrong(nursery):
    """A small order body trickled in pieces is read whole (one order); one whose
    client goes away before its declared length, or sends more than it declared,
    places nothing and costs the node nothing it keeps; the node serves on."""
    a = await start(nursery)
    auth = b"Authorization: Bearer %s\r\n" % a.token.encode()
    body = json.dumps({"side": "buy", "qty": "1", "price": "7"}).encode()

    async def post(head_length: int, sent: bytes, close: bool) -> trio.SocketStream:
        s = await _open(a.url)
        await s.send_all(b"POST /orders HTTP/1.1\r\nHost: x\r\n" + auth
                         + b"Content-Length: %d\r\n\r\n" % head_length)
        for i in range(0, len(sent), 3):
            await s.send_all(sent[i:i + 3])
            await trio.sleep(BODY_PACE_S)
        if close:
            await s.aclose()
        return s

    split = await post(len(body), body, close=False)  # trickled: still one order
    async with split:
        with trio.fail_after(10):
            status, got = await Reader(split).answer()
        assert status == 201 and json.loads(got)["order"]["price"] == "7"
    for _ in range(10):
        await post(len(body) + 50, body, close=True)  # cut before its declared end
    longer = await post(len(body) - 5, body, close=False)  # more than declared
    async with longer:
        with trio.fail_after(10):
            status, got = await Reader(longer).answer()
        assert status == 400, got  # its first len-5 bytes: not JSON
    async with client() as http:
        orders = (await http.get(a.url + "/orders")).json()["orders"]
        assert [o["price"] for o in orders] == ["7"]
        assert (await http.get(a.url + "/status")).status_code == 200


WS_CONNS = 2  # connections, each pipelining more orders than may wait to be durable
WS_ORDERS = websocket.IN_COMMIT + 500
STUCK_S = 1.0  # a sender making no progress this long: the node stopped reading it


async def test_connections_pipelining_past_the_commit_bound_without_reading(nursery, tmp_path):
    """Several WebSocket connections on a durable node each send more orders than
    may wait to be durable (IN_COMMIT) and read nothing until the node took what
    it would: /status answers meanwhile; once they read, each gets every answer,
    in the order sent, and each order is placed once."""
    a = await start(nursery, data_dir=str(tmp_path / "a"), rate_limit=0)
    sent = [0] * WS_CONNS
    answers: list[list] = [[] for _ in range(WS_CONNS)]
    reading = trio.Event()

    async def pipeline(n: int) -> None:
        async with connect(a.url, token=a.token) as ws:
            async def sender() -> None:
                for i in range(WS_ORDERS):  # (blocks while the node reads no more)
                    await ws.send(op="order", id=i, order={
                        "side": "buy", "qty": "1", "price": str(1 + i % 50)})
                    sent[n] += 1

            async with trio.open_nursery() as inner:
                inner.start_soon(sender)
                await reading.wait()
                while len(answers[n]) < WS_ORDERS:
                    message = await ws.next()
                    if message.get("type") == "answer":
                        answers[n].append((message["id"], message["status"]))

    async with trio.open_nursery() as clients:
        for n in range(WS_CONNS):
            clients.start_soon(pipeline, n)
        with trio.fail_after(60):
            while True:  # until no sender makes progress: the node stopped reading them
                before = list(sent)
                await trio.sleep(STUCK_S)
                if sent == before and all(sent):
                    break  # (all sent, or blocked: the node buffers answers up to a bound)
        async with client() as http:
            with trio.fail_after(5):
                assert (await http.get(a.url + "/status")).status_code == 200
        reading.set()
    for n in range(WS_CONNS):
        assert answers[n] == [(i, 201) for i in range(WS_ORDERS)]
    assert trading_events(a.node) == WS_CONNS * WS_ORDERS


async def test_http10_close_head_and_chunked_requests_get_whole_answers(nursery):
    """The guard holds an answer's head for its body: requests that end their
    connection after the answer (HTTP/1.0, ``Connection: close``), a HEAD (a head
    with no body written) and a chunked order each get their whole answer."""
    a = await start(nursery)
    auth = b"Authorization: Bearer %s\r\n" % a.token.encode()
    body = json.dumps({"side": "buy", "qty": "1", "price": "3"}).encode()
    cases = [
        (b"GET /status HTTP/1.0\r\n\r\n", 200, True),
        (b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, True),
        (b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404, False),
        (b"POST /orders HTTP/1.1\r\nHost: x\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n"
         + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), 201, False),
    ]
    for request, status, closes in cases:
        stream = await _open(a.url)
        async with stream:
            await stream.send_all(request)
            with trio.fail_after(10):
                head = b""
                while b"\r\n\r\n" not in head:
                    data = await stream.receive_some(65536)
                    assert data, (request, head)
                    head += data
                got = int(head.split(b" ", 2)[1])
                assert got == status, (request, head)
                if request.startswith(b"HEAD"):
                    assert head.endswith(b"\r\n\r\n")  # a head alone, no body
                    continue
                rest = head.partition(b"\r\n\r\n")[2]
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += await stream.receive_some(65536)
                json.loads(rest[:length])
                if closes:  # and then the node ends the connection
                    while data := await stream.receive_some(65536):
                        rest += data
                    assert len(rest) == length
