"""Gossip: the node's background tasks — push, pull and discovery.

Theory of operation
-------------------
* **Push.** Every peer has a sender task draining its outbox: it takes what
  is queued (up to ``PUSH_BATCH`` deltas), joins it into one delta and POSTs
  it to ``/peer/push``. A failure drops that batch and backs the peer off;
  pull repairs whatever push lost. A dead peer therefore costs one timeout
  per backoff period and never blocks anyone else.
* **Pull.** Every ``pull_interval_s`` (jittered by +-20%), each peer's puller
  sends the node's causal context to that peer and merges the delta that
  comes back: exactly the events the node lacks. A new or restarted node
  catches up this way. Pushers and pullers are per peer, so a slow or dead
  peer only ever delays its own tasks.
* **Discovery.** At start and every ``announce_interval_s`` the node
  announces ``crdtbook:<book>`` with its port to a registry and looks the key
  up. With the embedded registry, "a registry" is every known peer's own
  (``--peer URL`` is enough: the node announces itself there and learns what
  that peer knows); with ``--registry URL``, just that one. Lookups run on the
  pull interval until the node knows at least one live peer.

Every wait is a trio timeout scope; every task lives in the node's nursery.
"""

from __future__ import annotations

import random

import httpx
import trio

from crdtbook.aworset import AWORSet
from crdtbook.codec import CodecError, decode_delta, encode_context, encode_delta
from crdtbook.replica import ReplicaError

from . import logs
from .service import Node, Peer

PUSH_BATCH = 5_000


def peer_headers(node: Node, with_url: bool = True) -> dict[str, str]:
    """Who is calling. Pushes leave the URL out (pulls carry it every interval):
    at a few orders per push, headers are a large share of the bytes."""
    headers = {
        "content-type": "application/cbor",
        "x-crdtbook-replica": node.id,
        "x-crdtbook-book": node.config.book,
    }
    if with_url:
        headers["x-crdtbook-url"] = node.url
    return headers


async def run(node: Node, client: httpx.AsyncClient) -> None:
    """All gossip tasks; returns only when cancelled."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_peer_tasks, node, client, nursery)
        nursery.start_soon(_discovery_loop, node, client)


async def _peer_tasks(node: Node, client: httpx.AsyncClient, nursery: trio.Nursery) -> None:
    """Give every peer, including ones found later, its own sender and puller.

    Per-peer tasks mean a slow or dead peer only ever delays itself.
    """
    while True:
        for peer in list(node.peers.values()):
            if not peer.started:
                peer.started = True
                nursery.start_soon(_peer_main, node, client, peer)
        await node.peer_added.wait()


async def _peer_main(node: Node, client: httpx.AsyncClient, peer: Peer) -> None:
    with trio.CancelScope() as scope:
        peer.cancel_scope = scope
        if node.peers.get(peer.url) is not peer:  # forgotten before it started
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sender, node, client, peer)
            nursery.start_soon(_puller, node, client, peer)


async def _sender(node: Node, client: httpx.AsyncClient, peer: Peer) -> None:
    async for first in peer.outbox:
        batch = [first]
        while len(batch) < PUSH_BATCH:
            try:
                batch.append(peer.outbox.receive_nowait())
            except trio.WouldBlock:
                break
        if not peer.ready(node.monotonic()):
            peer.dropped += len(batch)
            continue
        delta = batch[0] if len(batch) == 1 else _join(batch)
        body = encode_delta(delta)
        try:
            with trio.fail_after(node.config.request_timeout_s):
                response = await client.post(peer.url + "/peer/push", content=body,
                                             headers=peer_headers(node, with_url=False))
            if response.status_code != 204:
                raise httpx.HTTPStatusError(
                    f"push answered {response.status_code}: {response.text[:200]}",
                    request=response.request, response=response)
        except (httpx.HTTPError, trio.TooSlowError, OSError) as exc:
            _failed(node, peer, "push", exc)
            peer.dropped += len(batch)
            continue
        replica = response.headers.get("x-crdtbook-replica")
        if node.is_self(peer.url, replica):
            return
        peer.ok(replica, node.monotonic())
        node.stats["pushed_events"] += len(batch)
        node.stats["push_requests"] += 1
        node.stats["wire_bytes"] += wire_size(response)


def wire_size(response: httpx.Response) -> int:
    """HTTP/1.1 bytes of one exchange: request line, headers, body, and the same back."""
    request = response.request
    size = len(request.method) + len(request.url.raw_path) + len(" HTTP/1.1\r\n")
    size += sum(len(k) + len(v) + 4 for k, v in request.headers.raw) + 2
    size += len(request.content)
    size += len("HTTP/1.1 200 OK\r\n") + sum(len(k) + len(v) + 4 for k, v in
                                               response.headers.raw) + 2
    return size + len(response.content)


def _join(deltas: list[AWORSet]) -> AWORSet:
    combined = AWORSet()
    for delta in deltas:
        combined.merge(delta)
    return combined


def _failed(node: Node, peer: Peer, what: str, exc: BaseException) -> None:
    first = peer.failures == 0
    backoff = peer.failed(node.monotonic())
    detail = str(exc) or type(exc).__name__
    (logs.warning if first else logs.debug)(
        f"peer.{what}_failed", peer=peer.url, failures=peer.failures,
        backoff_s=round(backoff, 2), detail=detail[:200])


# -- pull --------------------------------------------------------------------
async def _puller(node: Node, client: httpx.AsyncClient, peer: Peer) -> None:
    interval = node.config.pull_interval_s
    while True:
        if peer.ready(node.monotonic()):
            await pull_one(node, client, peer)
        await trio.sleep(interval * random.uniform(0.8, 1.2))


async def pull_one(node: Node, client: httpx.AsyncClient, peer: Peer) -> None:
    body = encode_context(node.replica.context())
    try:
        with trio.fail_after(node.config.request_timeout_s * 4):
            response = await client.post(peer.url + "/peer/pull", content=body,
                                         headers=peer_headers(node))
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"pull answered {response.status_code}: {response.text[:200]}",
                request=response.request, response=response)
        delta = decode_delta(response.content)
        replica = response.headers.get("x-crdtbook-replica")
        if node.is_self(peer.url, replica):
            return
        added = node.accept(delta)
    except (httpx.HTTPError, trio.TooSlowError, OSError, CodecError, ReplicaError) as exc:
        _failed(node, peer, "pull", exc)
        return
    peer.ok(replica, node.monotonic())
    node.stats["pulled_events"] += added
    node.stats["pull_requests"] += 1
    node.stats["wire_bytes"] += wire_size(response)
    if added:
        logs.info("pull.merged", peer=peer.url, events=added)


# -- discovery -----------------------------------------------------------------
async def _discovery_loop(node: Node, client: httpx.AsyncClient) -> None:
    last_announce = None
    while True:
        now = node.monotonic()
        if last_announce is None or now - last_announce >= node.config.announce_interval_s:
            await announce(node, client)
            last_announce = now
        node.forget_dead()
        await lookup(node, client)
        lonely = not any(p.last_seen is not None for p in node.peers.values())
        await trio.sleep(node.config.pull_interval_s if lonely
                         else min(node.config.announce_interval_s, 5.0))


def _registries(node: Node) -> list[str]:
    if node.config.registry_url:
        return [node.config.registry_url]
    return [node.url] + sorted(node.peers)


async def announce(node: Node, client: httpx.AsyncClient) -> None:
    port = int(node.url.rsplit(":", 1)[1])
    async with trio.open_nursery() as nursery:
        for registry in _registries(node):
            nursery.start_soon(_grape_call, node, client, registry, "/announce", [node.key, port])


async def lookup(node: Node, client: httpx.AsyncClient) -> None:
    found: list[str] = []

    async def one(registry: str) -> None:
        answer = await _grape_call(node, client, registry, "/lookup", node.key)
        if isinstance(answer, list):
            found.extend(a for a in answer if isinstance(a, str))

    async with trio.open_nursery() as nursery:
        for registry in _registries(node):
            nursery.start_soon(one, registry)
    own = node.url.split("://", 1)[1]
    for address in sorted(set(found)):
        if address != own:
            node.add_peer(address)


async def _grape_call(node: Node, client: httpx.AsyncClient, registry: str, path: str,
                      data: object) -> object:
    """One grape API call; errors (string bodies, 500s, empty bodies) are logged, not raised."""
    try:
        with trio.fail_after(node.config.request_timeout_s):
            response = await client.post(registry.rstrip("/") + path, json={"data": data})
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}: {response.text[:100]}")
        if not response.content:
            raise ValueError("empty body")
        answer = response.json()
        if isinstance(answer, str):
            raise ValueError(answer)
        return answer
    except (httpx.HTTPError, trio.TooSlowError, OSError, ValueError) as exc:
        logs.debug("registry.call_failed", registry=registry, path=path,
                   detail=(str(exc) or type(exc).__name__)[:200])
        return None
