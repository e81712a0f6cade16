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

import h11
import trio
import trio.testing

from node.cluster.peerhttp import PeerClient

from .nodes import eventually, start

LOCAL = functools.partial(trio.serve_tcp, host="127.0.0.1")


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


async def honest(stream, target, payload):
    body = pull_body(target, payload)
    await stream.send_all(head(200 if body else 204, length(body)) + body)
    return "keep"


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
    async with PeerClient(idle_expiry=2.5) as client_:
        await client_.request("POST", urls[0] + "/peer/push", b"x", {}, 1024)
        for _ in range(4):
            await trio.sleep(1.0)
            await client_.request("POST", urls[1] + "/peer/push", b"x", {}, 1024)
        await trio.testing.wait_all_tasks_blocked()
        assert keeper.open == 0 and other.open == 1
        assert client_._idle_count == 1 and client_._slots.borrowed_tokens == 1
