"""Node: one participant's replica plus what the network needs around it.

Theory of operation
-------------------
``Node`` owns the ``Replica`` and everything a running peer knows: its URL,
the embedded registry, the table of peers (url -> ``Peer``) and, per peer,
a bounded outbox of deltas to push. It is driven from two sides:

* the HTTP apps (node/api/app.py for clients, node/cluster/peerapi.py for
  peers) call ``place_many``, ``cancel``, ``accept``, ``sponsor`` and the views;
* the gossip tasks (node/cluster/gossip.py) drain outboxes, pull, and discover.

All of it runs on one trio thread, so the replica is never touched
concurrently and needs no lock. Nothing here waits: the only awaits are in
gossip.py and the apps. Time comes from ``clock_ms`` (wall) and
``monotonic`` (for peer health), both injectable for tests.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import trio

from crdtbook.aworset import AWORSet
from crdtbook.clock import LOGICAL_BITS
from crdtbook.codec import decode_delta_claims, decode_snapshot
from crdtbook.replica import Replica, ReplicaError

from . import logs
from .cluster.registry import DEFAULT_TTL_S, Registry

OUTBOX_LIMIT = 10_000  # deltas queued per peer before pushes are dropped (pull repairs)
MAX_BACKOFF_S = 30.0
MAX_PEERS = 64  # beyond this, newly heard-of peers are ignored (a flood must not stall us)
PAGE = 20_000  # events per pull answer (and per join answer): a bounded message


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 8700
    peers: list[str] = field(default_factory=list)
    registry_url: str | None = None  # None: use the embedded registries of known peers
    book: str = "default"
    replica_id: str | None = None
    pull_interval_s: float = 1.0
    announce_interval_s: float = DEFAULT_TTL_S / 3
    registry_ttl_s: float = DEFAULT_TTL_S
    request_timeout_s: float = 2.0
    client_body_limit: int = 4 * 1024 * 1024
    peer_body_limit: int = 64 * 1024 * 1024
    max_clock_ahead_s: float = 60.0  # refuse (for now) events stamped further in the future
    leave_on_stop: bool = True  # a graceful stop announces that this replica leaves
    compact_interval_s: float | None = 5.0  # drop settled history below F this often
    rpc_host: str | None = "127.0.0.1"  # Grenache PeerRPC listener (None: off)
    rpc_port: int = 0


class NotReady(Exception):
    """The node cannot create events now (joining, or its id is in conflict)."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


class Peer:
    def __init__(self, url: str, sticky: bool) -> None:
        self.url = url
        self.sticky = sticky  # given with --peer: never forgotten
        self.replica: str | None = None
        self.last_seen: float | None = None  # monotonic seconds
        self.failures = 0
        self.failing_since: float | None = None
        self.retry_at = 0.0
        self.outbox_send, self.outbox = trio.open_memory_channel[AWORSet](OUTBOX_LIMIT)
        self.dropped = 0
        self.started = False  # its push and pull tasks are running
        self.cancel_scope: trio.CancelScope | None = None

    def ok(self, replica: str | None, now: float) -> None:
        if replica:
            self.replica = replica
        self.last_seen = now
        self.failures = 0
        self.failing_since = None
        self.retry_at = 0.0

    def failed(self, now: float) -> float:
        if not self.failures:
            self.failing_since = now
        self.failures += 1
        backoff = min(MAX_BACKOFF_S, 0.25 * 2 ** min(self.failures, 10))
        self.retry_at = now + backoff
        return backoff

    def ready(self, now: float) -> bool:
        return now >= self.retry_at


def new_replica_id() -> str:
    return "n" + secrets.token_hex(4)


def normalize_url(url: str) -> str:
    """``http://host:port`` or ValueError; accepts ``host:port`` too."""
    if not isinstance(url, str) or len(url) > 300 or not url.isascii():
        raise ValueError("peer URL must be a short ASCII http://HOST:PORT")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"peer URL {url!r} must look like http://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"peer URL {url!r} has a bad port") from None
    if not port:
        raise ValueError(f"peer URL {url!r} needs a port")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    normal = f"http://{host}:{port}"
    try:  # exactly what the HTTP client will do with it later
        httpx.Request("POST", normal + "/peer/pull")
    except Exception:
        raise ValueError(f"peer URL {url!r} is not a usable address") from None
    return normal


class Node:
    def __init__(
        self,
        config: NodeConfig,
        clock_ms: Callable[[], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.replica = Replica(config.replica_id or new_replica_id())
        self.registry = Registry(config.registry_ttl_s)
        self.peers: dict[str, Peer] = {}
        self.url = ""  # set once the server is bound
        self.rpc_port: int | None = None  # the PeerRPC port, once bound
        self.key = f"crdtbook:{config.book}"  # announced with the HTTP port
        self.rpc_key = f"{self.key}:rpc"  # announced with the PeerRPC port
        self.clock_ms = clock_ms or (lambda: math.floor(time.time() * 1000))
        self.monotonic = monotonic
        self.peer_added = trio.Event()  # replaced each time a peer is added
        # peer traffic this node initiated (both directions), for status and bench/
        self.conflict: str | None = None  # set if peers hold events under our id
        self.client = None  # the node's httpx.AsyncClient, set by the server
        self.stats = {"pushed_events": 0, "push_requests": 0, "pulled_events": 0,
                      "pull_requests": 0, "wire_bytes": 0}

    @property
    def id(self) -> str:
        return self.replica.id

    # -- peers -----------------------------------------------------------
    def add_peer(self, url: str, sticky: bool = False) -> Peer | None:
        try:
            url = normalize_url(url)
        except ValueError as exc:
            logs.warning("peer.bad_url", detail=str(exc))
            return None
        if url == self.url or url in self.peers:
            return self.peers.get(url)
        if len(self.peers) >= MAX_PEERS and not sticky:
            logs.debug("peer.ignored", peer=url, why=f"already {MAX_PEERS} peers")
            return None
        peer = Peer(url, sticky)
        self.peers[url] = peer
        logs.info("peer.added", peer=url)
        self.peer_added.set()
        self.peer_added = trio.Event()
        return peer

    def forget_peer(self, url: str, why: str) -> None:
        peer = self.peers.pop(url, None)
        if peer is not None:
            logs.info("peer.forgotten", peer=url, why=why)
            if peer.cancel_scope is not None:
                peer.cancel_scope.cancel()

    def forget_dead(self) -> None:
        """Drop discovered peers that have failed for longer than a registry TTL.

        Peers given with --peer stay (with backoff); the registry stops listing
        a dead node after its TTL, so it is not re-added.
        """
        now = self.monotonic()
        for url, peer in sorted(self.peers.items()):
            if (not peer.sticky and peer.failing_since is not None
                    and now - peer.failing_since > self.config.registry_ttl_s):
                self.forget_peer(url, f"unreachable for over {self.config.registry_ttl_s:g}s")

    def seen(self, url: str | None, replica: str | None) -> None:
        """A request or answer came from ``url`` (if it said) as ``replica``."""
        if not url:
            return
        if replica == self.id:
            return
        peer = self.add_peer(url)
        if peer is not None and replica:
            # Hearing from a peer says nothing about whether *we* can reach it:
            # its backoff stays as our own calls left it.
            peer.replica = replica

    def is_self(self, url: str, replica: str | None) -> bool:
        if replica == self.id and url in self.peers:
            self.forget_peer(url, "it is this node")
            return True
        return False

    # -- remote events ---------------------------------------------------
    def accept(self, delta: AWORSet, claims=()) -> int:
        """Merge a delta (and the claims riding with it) from a peer; return new events.

        Events and claims stamped more than ``max_clock_ahead_s`` ahead of this
        node's wall clock are left out (not lost: a later pull offers them
        again). Taking them would drag this node's hybrid clock, and so every
        order placed here, into the future, or push the final frontier past
        events that may still come. Raises ReplicaError (nothing changed) for a
        delta no honest peer sends.
        """
        limit = self._clock_limit()
        early = sorted(e for seqs in delta.store.values() for e in seqs.values()
                       if e.clock > limit)
        if early:
            logs.warning("peer.clock_ahead", events=len(early), first=str(early[0].dot),
                         ahead_s=round(((early[0].clock >> LOGICAL_BITS) - self.clock_ms())
                                       / 1000, 1))
            delta = AWORSet.from_entries([x for x in delta.entries() if x[2].clock <= limit])
        self.replica.observe_claims(c for c in claims if c.clock <= limit)
        try:
            return self.replica.merge(delta)
        except ReplicaError as exc:
            if "own id" in str(exc) and self.conflict is None:
                self.conflict = str(exc)
                logs.error("node.id_conflict", replica=self.id, detail=str(exc),
                           hint="another node uses this replica id; restart without --id")
            raise

    def take(self, kind: str, payload: bytes) -> int:
        """A peer's answer: a delta (merged) or a snapshot (installed). New events."""
        if kind == "snapshot":
            snapshot, claims = decode_snapshot(payload)
            limit = self._clock_limit()
            if snapshot.final > limit or any(e.clock > limit for e in snapshot.events):
                raise ValueError("snapshot stamped in the future; not installed")
            self.replica.observe_claims(c for c in claims if c.clock <= limit)
            before = self.replica.events_total()
            self.replica.install(snapshot)
            logs.info("node.snapshot_installed", events=len(snapshot.events),
                      final_clock=snapshot.final)
            return self.replica.events_total() - before
        delta, claims = decode_delta_claims(payload)
        return self.accept(delta, claims)

    def _clock_limit(self) -> int:
        """The highest clock taken from peers: ``max_clock_ahead_s`` past our wall clock."""
        return (self.clock_ms() + int(self.config.max_clock_ahead_s * 1000)) << LOGICAL_BITS

    def claims(self) -> list:
        """This node's claims for an outgoing message (its own renewed: a heartbeat)."""
        self.replica.claim(self.clock_ms())
        return self.replica.claims()

    @property
    def joined(self) -> bool:
        return self.replica.is_member(self.id)

    def ready_to_trade(self) -> None:
        """Raise NotReady unless this node may create events."""
        if self.conflict is not None:
            raise NotReady("conflict", "another node uses this replica id; this node stopped "
                                       "accepting orders (restart it without --id)")
        if not self.joined:
            raise NotReady("joining", "this node has not joined the cluster yet; retry shortly")

    def bootstrap(self) -> None:
        self.replica.bootstrap(self.clock_ms())
        logs.info("node.founded", replica=self.id, book=self.config.book)

    def sponsor(self, replica: str) -> None:
        """Admit ``replica`` (asked by a joining node). The answer is a first page
        of state (or a snapshot); the joiner's pulls fetch the rest."""
        if replica not in self.replica.members():
            delta = self.replica.join(replica, self.clock_ms())
            self.push(delta)
            logs.info("node.admitted", replica=replica)

    def leave(self) -> AWORSet | None:
        if not self.joined:
            return None
        delta = self.replica.leave(self.clock_ms())
        logs.info("node.left", replica=self.id)
        return delta

    def evict(self, replica: str) -> AWORSet:
        delta = self.replica.evict(replica, self.clock_ms())
        self.push(delta)
        logs.warning("node.evicted", replica=replica)
        return delta

    # -- local events ----------------------------------------------------
    def place_many(self, orders) -> list:
        """Place validated orders; push one combined delta. Returns the Placed list."""
        self.ready_to_trade()
        placed = []
        combined = AWORSet()
        for order in orders:
            result = self.replica.place(order.side, order.qty, order.price, order.type,
                                        order.account, now_ms=self.clock_ms())
            combined.merge(result.delta)
            placed.append(result)
        self.push(combined)
        return placed

    def cancel(self, dot):
        self.ready_to_trade()
        result = self.replica.cancel(dot, now_ms=self.clock_ms())
        self.push(result.delta)
        return result

    def push(self, delta: AWORSet) -> None:
        for peer in list(self.peers.values()):
            try:
                peer.outbox_send.send_nowait(delta)
            except trio.WouldBlock:
                peer.dropped += 1  # the peer is slow or down; pull will repair

    # -- views -----------------------------------------------------------
    def status(self) -> dict:
        now = self.monotonic()
        final = self.replica.frontier()
        newest = self.replica.newest_clock()
        return {
            "replica": self.id,
            "book": self.config.book,
            "url": self.url,
            "peers": [
                {
                    "url": peer.url,
                    "replica": peer.replica,
                    "last_seen_s": None if peer.last_seen is None
                    else round(now - peer.last_seen, 3),
                    "failures": peer.failures,
                }
                for peer in sorted(self.peers.values(), key=lambda p: p.url)
            ],
            "events": self.replica.event_count(),
            "events_total": self.replica.events_total(),
            "applied": self.replica.applied_count(),
            "digest": self.replica.digest(),
            "clock": self.replica.clock.last,
            "final_clock": final,
            "final_lag_ms": max(0, (newest - final) >> LOGICAL_BITS) if final else None,
            "members": self.replica.members(),
            "joined": self.joined,
            "conflict": self.conflict,
            "registry": self.config.registry_url or "embedded",
            "rpc": (f"{self.config.rpc_host}:{self.rpc_port}" if self.rpc_port else None),
            "gossip": dict(self.stats,
                           dropped_pushes=sum(p.dropped for p in self.peers.values())),
        }

    def context(self) -> dict:
        """For each origin replica, the highest seq held with no gap before it."""
        cc = self.replica.state.context
        return {replica: cc.contiguous(replica) for replica in cc.replicas()}
