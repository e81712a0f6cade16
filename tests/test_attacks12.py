"""Attacks on the node's peer client (node/cluster/peerhttp.py) by the peers it calls.

A node calls its peers all the time (pushes, pulls, joins, its registries):
here those peers are hostile or broken HTTP servers on 127.0.0.1 that read
each request (with h11) and answer with bytes no honest server sends: heads
and bodies that never end, answers trickled, 1xx answers, answers nobody
asked for, resets, HTTP/1.0, gzip bombs. Each test passes when the node held:
it stayed live, replicated to its honest peers meanwhile, took nothing from a
refused answer, and kept its connections bounded and none in a bad state.
"""

from __future__ import annotations

import functools
import gzip
import os
import socket
import struct
import subprocess
import tempfile

import h11
import pytest
import trio
import trio.testing

from node.cluster import gossip
from node.cluster.peerhttp import PeerClient

from .nodes import DATA_DIRS, client, converged, eventually, start, trading_events
from .peers import SignedPeer
from .procs import ROOT, NodeProcess
from .test_attacks import order
from .test_attacks4 import task_count

LOCAL = functools.partial(trio.serve_tcp, host="127.0.0.1")
TRICKLE_S = 0.3  # a trickling peer's cadence: one byte per tick
HOLD_S = 0.05  # how long a peer waits before the bytes nobody asked for


async def read_request(stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
    """The next request on ``stream`` (None: the client closed it)."""
    conn = h11.Connection(h11.SERVER)
    request, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        else:
            return None


async def until_closed(stream: trio.SocketStream) -> None:
    """Wait for the client to close (what it sends meanwhile is dropped)."""
    while await stream.receive_some(65536):
        pass


class Hostile:
    """A peer that reads each request and answers with ``act(stream, target, body)``,
    which returns "keep" (serve the next request), "dirty" (keep, but bytes nobody
    asked for were sent: a next request on it is a client bug) or "close"."""

    def __init__(self, act, payload: bytes = b"") -> None:
        self.act = act
        self.payload = payload  # what its pull answers carry, when they carry anything
        self.accepted = 0
        self.ended = 0
        self.requests: list[bytes] = []
        self.heads: list[h11.Request] = []
        self.dirty_reuse = 0
        self.url = ""

    async def serve(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(LOCAL, self._handle, 0)
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        return self.url

    @property
    def open(self) -> int:
        return self.accepted - self.ended

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            async with stream:
                dirty = False
                while True:
                    got = await read_request(stream)
                    if got is None:
                        return
                    self.dirty_reuse += dirty
                    self.requests.append(got[0].target)
                    self.heads.append(got[0])
                    outcome = await self.act(stream, got[0].target, self.payload)
                    if outcome == "close":
                        return
                    dirty = outcome == "dirty"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.ended += 1


def head(status: int = 200, *fields: str, version: str = "1.1") -> bytes:
    return (f"HTTP/{version} {status} X\r\n" + "".join(f + "\r\n" for f in fields)
            + "\r\n").encode()


def length(body: bytes) -> str:
    return f"content-length: {len(body)}"


def pull_body(target: bytes, payload: bytes) -> bytes:
    return payload if target == b"/peer/pull" else b""


# -- the hostile answers: each one refused, and its connection never reused ------------------
async def endless_head(stream, target, payload):
    await stream.send_all(b"HTTP/1.1 200 OK\r\n")
    while True:
        await stream.send_all(b"x-more: " + b"m" * 1000 + b"\r\n")


async def endless_chunks(stream, target, payload):
    await stream.send_all(head(200, "transfer-encoding: chunked"))
    while True:
        await stream.send_all(b"400\r\n" + b"c" * 1024 + b"\r\n")


async def huge_length_then_silence(stream, target, payload):
    await stream.send_all(head(200, "content-length: 999999999999") + payload)
    await until_closed(stream)
    return "close"


async def trickle(stream, target, payload):
    body = pull_body(target, payload)
    for byte in head(200 if body else 204, length(body)) + body:
        await stream.send_all(bytes([byte]))
        await trio.sleep(TRICKLE_S)
    return "keep"


async def endless_informational(stream, target, payload):
    while True:
        await stream.send_all(head(100) * 100)


async def switching_protocols(stream, target, payload):
    body = pull_body(target, payload)
    await stream.send_all(head(101, "upgrade: h2c", "connection: upgrade")
                          + head(200 if body else 204, length(body)) + body)
    return "dirty"


async def truncated(stream, target, payload):
    body = pull_body(target, payload) or b"x"
    await stream.send_all(head(200, f"content-length: {len(body) + 10}") + body)
    return "close"


async def unfinished_chunks(stream, target, payload):
    body = pull_body(target, payload) or b"x"
    await stream.send_all(head(200, "transfer-encoding: chunked") + b"%x\r\n" % len(body)
                          + body + b"\r\n")
    return "close"


async def reset_mid_answer(stream, target, payload):
    body = pull_body(target, payload) or b"x"
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.send_all(head(200, f"content-length: {len(body) + 10}") + body[:5])
    return "close"


async def answers_nobody_asked_for(stream, target, payload):
    # an answer (an empty one: taken, not refused), a second one in the same write, a
    # third a moment later
    await stream.send_all(head(204) + head(204))
    await trio.sleep(HOLD_S)
    await stream.send_all(head(204))
    return "dirty"


async def http10_endless(stream, target, payload):
    await stream.send_all(head(200, version="1.0"))
    while True:
        await stream.send_all(b"z" * 65536)


BOMB = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB


async def gzip_bomb(stream, target, payload):
    await stream.send_all(head(200, "content-encoding: gzip", length(BOMB)) + BOMB)
    return "keep"


async def huge_head_then_answer(stream, target, payload):
    body = pull_body(target, payload)
    # past MAX_HEAD and one read more (h11 counts an incomplete head only)
    await stream.send_all(b"HTTP/1.1 200 OK\r\n" + b"x-pad: p\r\n" * 20_000 + length(body).encode()
                          + b"\r\n\r\n" + body)
    return "keep"


async def wrong_status(stream, target, payload):
    body = pull_body(target, payload)
    await stream.send_all(head(500, length(body)) + body)
    return "keep"


async def close_and_keep_alive(stream, target, payload):
    await stream.send_all(head(204, "connection: keep-alive", "connection: close"))
    return "dirty"  # asked to close: a next request on it is a client bug


async def http10_keep_alive(stream, target, payload):
    await stream.send_all(head(204, "connection: keep-alive", version="1.0"))
    return "dirty"


ATTACKS = [endless_head, endless_chunks, huge_length_then_silence, trickle,
           endless_informational, switching_protocols, truncated, unfinished_chunks,
           reset_mid_answer, answers_nobody_asked_for, http10_endless, gzip_bomb,
           huge_head_then_answer, wrong_status, close_and_keep_alive, http10_keep_alive]


async def honest(stream, target, payload):
    body = pull_body(target, payload)
    await stream.send_all(head(200 if body else 204, length(body)) + body)
    return "keep"


async def redirect(location, stream, target, payload):
    await stream.send_all(head(307, f"location: {location}{target.decode()}",
                               "content-length: 0"))
    return "keep"


async def test_hostile_peers_answers_are_refused_and_the_node_stays_live_and_bounded(
        nursery):
    """17 hostile peers, one way each, call after call; meanwhile a's orders reach its
    honest peer b, a answers /status, and no event the hostile peers' answers carry
    (a member's signed order, whole in most of them) gets in. Forgotten, the hostile
    peers see every connection a opened to them closed."""
    async with client() as http:
        a = await start(nursery, registry_ttl_s=3600.0)
        b = await start(nursery, a.url)
        member = SignedPeer("only-hostile-peers-carry-my-order").admitted_by(a.node)
        await eventually(lambda: converged(a, b))
        offered = member.place("sell", "1", "77", now_ms=a.node.clock_ms())
        payload = member.blocks([offered], now_ms=a.node.clock_ms())
        lure = Hostile(honest, payload)  # where a redirect points: never followed
        peers = [Hostile(attack, payload) for attack in ATTACKS] + [
            Hostile(functools.partial(redirect, await lure.serve(nursery)), payload)]
        urls = [await peer.serve(nursery) for peer in peers]
        await trio.testing.wait_all_tasks_blocked()
        tasks = task_count()
        for url in urls:
            a.node.add_peer(url)
        placed = 0
        with trio.fail_after(60):
            while not all(len(p.requests) >= 3 for p in peers):
                await order(http, a.url, "buy", price=str(10 + placed % 5))
                placed += 1
                status = await http.get(f"{a.url}/status")
                assert status.status_code == 200
                await trio.sleep(ORDER_EVERY_S)  # orders keep coming while peers attack
        await eventually(lambda: converged(a, b, events=placed))
        assert [p.dirty_reuse for p in peers] == [0] * len(peers)
        assert lure.requests == []
        assert trading_events(a.node) == placed  # the member's order is not in
        for peer in peers:
            a.node.forget_peer(peer.url, "a test")
        # every connection a opened to them closed (the never-ending ones by a's timeouts,
        # the idle kept-alive ones by the client's sweep)
        await eventually(lambda: [p.open for p in peers] == [0] * len(peers))
        await eventually(lambda: a.node.client._slots.borrowed_tokens <= 4)
        await eventually(lambda: task_count() <= tasks + 4)  # no call left behind
        # control: the same answer, served honestly, gets in
        fair = Hostile(honest, payload)
        a.node.add_peer(await fair.serve(nursery))
        await eventually(lambda: trading_events(a.node) == placed + 1)


async def test_a_forgotten_peers_idle_connection_is_closed(nursery):
    """The client closed a stale idle connection only when the same address was called
    again: a peer forgotten after an answer kept a connection open for ever (httpx closed
    expired ones of every address on each call)."""
    keeper = Hostile(honest)  # keeps every connection open, never times one out
    a = await start(nursery)
    a.node.add_peer(await keeper.serve(nursery))
    await eventually(lambda: len(keeper.requests) >= 2)
    a.node.forget_peer(keeper.url, "a test")
    await eventually(lambda: keeper.open == 0)  # a's own calls go on (its registry)


async def test_an_idle_connection_of_an_address_not_called_again_expires(
        nursery, autojump_clock):
    keeper = Hostile(honest)
    other = Hostile(honest)
    urls = [await keeper.serve(nursery), await other.serve(nursery)]
    async with PeerClient(idle_expiry=IDLE_EXPIRY_S) as client_:
        await client_.request("POST", urls[0] + "/peer/push", b"x", {}, 1024)
        for _ in range(4):  # calls to the other address only, past the first's expiry
            await trio.sleep(IDLE_EXPIRY_S * 0.4)  # the mock clock's seconds
            await client_.request("POST", urls[1] + "/peer/push", b"x", {}, 1024)
        await trio.testing.wait_all_tasks_blocked()
        assert keeper.open == 0 and other.open == 1
        assert client_._idle_count == 1 and client_._slots.borrowed_tokens == 1


async def test_a_peer_that_never_reads_bounds_the_push_in_time(nursery):
    """A push far larger than the socket buffers, to a peer that accepts and never reads:
    the send is cut by the call's time bound, the connection dropped, the next call to
    an honest peer answered by that peer."""
    accepted = []

    async def never_read(stream):
        accepted.append(stream)
        await trio.sleep_forever()

    listeners = await nursery.start(LOCAL, never_read, 0)
    deaf = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    fair = Hostile(honest, b"mine")
    url = await fair.serve(nursery)
    async with PeerClient() as client_:
        with pytest.raises(gossip.CallFailed, match="no answer within"):
            await gossip.post(client_, deaf + "/peer/push", b"p" * (64 << 20), {}, 1.0, 1024)
        assert client_._slots.borrowed_tokens == 0 and len(accepted) == 1
        answer = await gossip.post(client_, url + "/peer/pull", b"x", {}, 5.0, 1024)
        assert answer.content == b"mine"


HANGING = 100  # peers that take a request and never answer: more calls than the client's slots
ORDERS = 30  # placed at the node while its peers attack
SAMPLE_S = 0.1  # how often the test counts the node's open files


async def hang(stream, target, payload):
    await until_closed(stream)
    return "close"


async def start_logging(node: NodeProcess, stderr) -> None:
    """``node.start()``, its stderr into ``stderr``."""
    node.proc = subprocess.Popen(node.command(), cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=stderr, text=True)
    with trio.fail_after(20):
        line = await trio.to_thread.run_sync(node.proc.stdout.readline)
    assert " listening on " in line, line
    node.url = line.split()[-1]
    DATA_DIRS[node.url] = node.data_dir


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="counts /proc/PID/fd")
async def test_a_node_process_among_hanging_and_hostile_peers_stays_bounded_and_quiet(nursery):
    """``crdtbook node`` given, besides an honest peer, 100 peers that never answer and
    the 16 hostile ones (more calls at once than its 256 connections): its open files
    stay under that bound, it answers /status, its orders reach the honest peer, and
    its stderr holds log lines only (warnings, no traceback)."""
    peers = [Hostile(attack) for attack in ATTACKS] + [Hostile(hang) for _ in range(HANGING)]
    urls = [await peer.serve(nursery) for peer in peers]
    with tempfile.TemporaryDirectory() as root, \
            open(os.path.join(root, "stderr"), "w+") as stderr:
        a = NodeProcess(os.path.join(root, "a"))
        await a.start()
        p = NodeProcess(os.path.join(root, "p"), a.url, *urls)
        await start_logging(p, stderr)
        try:
            async with client() as http:
                most, placed, slowest = 0, 0, 0.0

                async def joined() -> bool:
                    status = (await http.get(f"{p.url}/status")).json()
                    return status["joined"] and status["caught_up"]
                await eventually(joined, timeout=30)
                asked = [len(peer.requests) for peer in peers]
                with trio.fail_after(90):
                    while placed < ORDERS or any(len(peer.requests) < n + 3
                                                 for peer, n in zip(peers, asked, strict=True)):
                        most = max(most, open_files(p.proc.pid))
                        status = await http.get(f"{p.url}/status")
                        assert status.status_code == 200
                        began = trio.current_time()
                        await order(http, p.url, "buy", price=str(10 + placed % 5))
                        slowest = max(slowest, trio.current_time() - began)
                        placed += 1
                        await trio.sleep(SAMPLE_S)
                honest = open_files(a.proc.pid)
                print(f"open files: at most {most} (the honest peer: {honest}); "
                      f"{placed} orders, the slowest answered in {slowest:.2f}s")

                async def reached() -> bool:  # the same set at both
                    there, here = [(await http.get(f"{n.url}/status")).json()
                                   for n in (a, p)]
                    return there["digest"] == here["digest"]
                await eventually(reached, timeout=30)
        finally:
            await p.stop()
            await a.stop()
        stderr.seek(0)
        lines = [line for line in stderr.read().splitlines() if line]
    assert most < 256 + 100
    # the client's 256 connections at most, what any node holds, a few more it was
    # answering (the 114 peers could have asked for 400 and more at once)
    assert most <= honest + 256 + 16
    # the start line, then warnings only (each clear, one line)
    assert lines[0].startswith("crdtbook node "), lines[0]
    assert lines[1:] and all(line.startswith("ts=") and " level=warning " in line
                             for line in lines[1:]), \
        [line for line in lines[1:] if " level=warning " not in line][:5]


async def test_a_peer_answering_before_the_whole_request_came_is_heard(nursery):
    """A real node refuses a push past its body limit as soon as it is past, and closes:
    the sender's write then fails (a broken pipe, a reset). httpx read the answer that
    had come (413 too_large); the client said only "broken pipe". The connection is never
    reused (the request was not all sent)."""
    a = await start(nursery)
    too_large = b"\0" * (gossip.PUSH_BODY_LIMIT + (1 << 20))
    async with PeerClient() as client_:
        with pytest.raises(gossip.CallFailed) as refused:
            await gossip.post(client_, a.url + "/peer/push", too_large,
                              {"x-crdtbook-book": "default"}, 10.0, 4096, expect=204)
        assert refused.value.status == 413 and b"too_large" in refused.value.body
        assert client_._slots.borrowed_tokens == 0
        hello = await gossip.post(client_, a.url + "/peer/hello?nonce=00", b"", {}, 5.0,
                                  4096, method="GET")
        assert b'"replica"' in hello.content


async def test_peer_urls_other_than_http_host_port_are_refused_before_connecting(nursery):
    """Ports out of range, userinfo, other schemes: a ValueError before any connection
    (a refused call). An IPv6 address is a peer like any other, its Host header
    bracketed."""
    peer = Hostile(honest)
    v6 = await nursery.start(functools.partial(trio.serve_tcp, host="::1"), peer._handle, 0)
    port = v6[0].socket.getsockname()[1]
    async with PeerClient() as client_:
        for url in (f"http://[::1]:{port + 65536}/", f"http://[::1]:{port}99999/",
                    f"https://[::1]:{port}/", f"http://user@[::1]:{port}/",
                    f"http://:pw@[::1]:{port}/", f"http://[::1:{port}/"):
            with pytest.raises(gossip.CallFailed, match="ValueError|not an http"):
                await gossip.post(client_, url + "peer/push", b"x", {}, 2.0, 1024, expect=204)
        assert peer.accepted == 0 and client_._slots.borrowed_tokens == 0
        await gossip.post(client_, f"http://[::1]:{port}/peer/push", b"x", {}, 2.0, 1024,
                          expect=204)
    assert peer.requests == [b"/peer/push"] and peer.accepted == 1
    assert dict(peer.heads[0].headers)[b"host"] == f"[::1]:{port}".encode()


ORDER_EVERY_S = 0.1  # a cadence, not a wait for anything
IDLE_EXPIRY_S = 2.5
