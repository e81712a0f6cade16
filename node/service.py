"""Node: one participant's replica plus what the network needs around it.

Theory of operation
-------------------
``Node`` owns the ``Replica`` and everything a running peer knows: its URL,
the embedded registry, the table of peers (url -> ``Peer``) and, per peer,
a bounded outbox of signed blocks to push. It is driven from two sides:

* the HTTP apps (node/api/app.py for clients, node/cluster/peerapi.py for
  peers) call ``place_many``, ``cancel``, ``accept``, ``sponsor`` and the views;
* the gossip tasks (node/cluster/gossip.py) drain outboxes, pull, and discover.

All of it runs on one trio thread, so the replica is never touched
concurrently and needs no lock. Nothing here waits: the only awaits are in
gossip.py and the apps. Time comes from ``clock_ms`` (wall) and
``monotonic`` (for peer health), both injectable for tests.

Durability: the node opens its data directory (node/store/) before anything
else, stands its replica up from it (same id, same seq), and hands every
event new to the replica to the ``Journal`` in the same step that made it
(``_journal_fresh``). Whoever answers or sends afterwards awaits
``journal.sync()`` first: that is the whole durability rule.

Trust: every message from a peer goes through the replica's ``Door``
(crdtbook/door.py), which verifies signed blocks and claims before anything
merges. The node's own events are sealed into one signed block per commit
(the journal's ``sealer``) and pushed once durable (``sealed``).
"""

from __future__ import annotations

import datetime
import functools
import itertools
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress, groupby
from operator import itemgetter
from urllib.parse import urlsplit

import httpx
import trio

from crdtbook.aworset import AWORSet
from crdtbook.clock import LOGICAL_BITS
from crdtbook.codec import encode_snapshot
from crdtbook.door import Door, DoorError, OwnFeedConflict, Verified
from crdtbook.events import ORDER
from crdtbook.feedwire import decode_blocks_message, decode_proofs, encode_proofs
from crdtbook.snapshot import Claim

from . import gcpolicy, logs
from .api import auth
from .cluster.registry import DEFAULT_TTL_S, Registry
from .metrics import Metrics
from .store import accounts, admintoken, jointoken, secretfile
from .store.datadir import Retired, open_store, phrase
from .store.feedindex import StoreIndex
from .store.journal import Journal
from .store.recover import recover
from .store.sqlite import Batch, FinalOrder, StoredFill

OUTBOX_LIMIT = 10_000  # block lists queued per peer before pushes are dropped (pull repairs)
MAX_BACKOFF_S = 30.0
MAX_PEERS = 64  # beyond this, newly heard-of peers are ignored (a flood must not stall us)
CLAIM_EVERY_S = 0.05  # own claims (finality heartbeats) are renewed at most this often
PAGE = 20_000  # events per pull answer (and per join answer): a bounded message
SILENT_AFTER_S = 5.0  # a member heard from no later than this is "silent" in status
STRAY_BODIES = 65_536  # row bodies kept past twice the events held before they are sorted out


@dataclass
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 8700
    peers: list[str] = field(default_factory=list)
    registry_url: str | None = None  # None: use the embedded registries of known peers
    book: str = "default"
    data_dir: str | None = None  # None: ephemeral (a throwaway store, a new id each start)
    fsync: bool = True
    rejoin_as_new: bool = False  # a retired (left/evicted) store is set aside, not refused
    join_token: str | None = None  # shown to a sponsor; a founder makes it the cluster's
    open_admission: bool = False  # --open: a founder's cluster admits without a token
    bootstrap_expect: int = 0  # found only together with this many nodes (see gossip.py)
    clock_lease_ms: int = 2_000  # how far past now a claim may promise (see renew_lease)
    snapshot_interval_s: float = 30.0  # at most this often a snapshot goes to the store
    pull_interval_s: float = 1.0
    announce_interval_s: float = DEFAULT_TTL_S / 3
    registry_ttl_s: float = DEFAULT_TTL_S
    request_timeout_s: float = 2.0
    client_body_limit: int = 4 * 1024 * 1024
    peer_body_limit: int = 64 * 1024 * 1024
    max_connections: int | None = None  # None: below the open-file limit (httpserve.py)
    max_clock_ahead_s: float = 60.0  # refuse (for now) events stamped further in the future
    leave_on_stop: bool | None = None  # None: only an ephemeral node leaves when it stops
    compact_interval_s: float | None = 5.0  # drop settled history below F this often
    rpc_host: str | None = "127.0.0.1"  # Grenache PeerRPC listener (None: off)
    rpc_port: int = 0
    # client authentication (node/api/auth.py): off only with no_auth on loopback
    # (protected mode), or insecure_no_auth anywhere
    auth: bool = True
    insecure_no_auth: bool = False
    rate_limit: float = 1000.0  # orders (and cancels) per second per account; 0: unlimited
    rate_burst: int = 2000
    # pushes to peers over one WebSocket each (cluster/pushstream.py), and /peer/stream
    # served (--peer-stream); off: every push is an HTTP request, and /peer/stream
    # answers 404. Off by default: cheaper per push, not yet per order in the cluster
    # (docs/performance.md, the peers' transport, ninth pass)
    peer_stream: bool = False


class ProtectedMode(Exception):
    """Authentication is off and the node was asked to listen beyond loopback."""


class NotReady(Exception):
    """The node cannot create events now (joining, or its id is in conflict)."""

    def __init__(self, error: str, detail: str, status: int = 503) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.status = status


class Peer:
    def __init__(self, url: str, sticky: bool) -> None:
        self.url = url
        self.sticky = sticky  # given with --peer: never forgotten
        self.replica: str | None = None
        self.last_seen: float | None = None  # monotonic seconds
        self.failures = 0
        self.failing_since: float | None = None
        self.warned_at: float | None = None  # last warning logged about it failing
        self.last_error: str | None = None
        self.retry_at = 0.0
        # (wall ms once durable, blocks): the time feeds the push-age figures (pushage.py)
        self.outbox_send, self.outbox = trio.open_memory_channel[tuple](OUTBOX_LIMIT)
        self.suspects: list[str] = []  # origins it suspects us of holding another version of
        self.dropped = 0
        self.started = False  # its push and pull tasks are running
        self.cancel_scope: trio.CancelScope | None = None

    def ok(self, replica: str | None, now: float) -> None:
        if replica:
            self.replica = replica
        self.last_seen = now
        self.failures = 0
        self.failing_since = None
        self.warned_at = None
        self.last_error = None
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
        refusal = auth.protected_mode(config)
        if refusal is not None:
            raise ProtectedMode(refusal)
        self.store, self.signer, fresh = open_store(
            config.data_dir, config.book, fsync=config.fsync, rejoin_as_new=config.rejoin_as_new)
        replica_id = self.signer.id
        try:
            # only the token's digest stays in memory (see node/store/admintoken.py)
            self.admin_digest = admintoken.ensure(self.store.directory)
            self.accounts = accounts.load(self.store)
            default = self.accounts.default_row(accounts.ensure_default(self.store.directory),
                                                int(time.time() * 1000))
            if default is not None:
                self.store.write(Batch(accounts=[default]))
                self.accounts.put(default)
            self.replica, replayed = recover(self.store, replica_id)
            self.door = Door(self.replica, self.signer.sign)
            self.door.index = StoreIndex(self.store)
            self.door.tips.update(self.store.tips())
            self._restore_proofs()
        except BaseException:
            self.close()
            raise
        self.journal = Journal(self.store)
        self.journal.index = self.door.index
        self.journal.sealer = self._seal
        self.journal.sealed = self._push_sealed
        self.journal.before = self.merge_arrivals
        self.journal.encoded = self.replica.hash_pending
        self._arrivals: list[_Arrival] = []  # pushes waiting to be merged (arrive)
        self._unsealed: list = []  # own events journaled, to seal at the next commit
        self._own_claim: Claim | None = None  # the last own claim sent, and when it was made
        self._claimed_at = 0.0
        self.replica.take_fresh()  # recovered events are durable already
        if config.leave_on_stop is None:
            config.leave_on_stop = self.store.ephemeral
        self.retired: str | None = self.store.meta.get("retired")
        how = self.replica.retirement(self.replica.id)
        if how is not None and self.retired is None:  # learnt just before a crash
            self.store.write(Batch(meta={"retired": how}))
            self.close()
            raise Retired(f"replica {replica_id} {phrase(how)}; start with --rejoin-as-new "
                          "to keep its data aside and join as a new replica")
        self.lease = self.store.meta.get("clock_lease", 0)  # highest clock a claim may reach
        # own seq each peer replica is known to hold (push answers, pull contexts)
        self.peer_holds: dict[str, int] = {}
        self.ack_waiting = 0  # requests waiting for peers to hold their events
        self.bootstrap_group: list[str] = []  # --bootstrap-expect: the ids found so far
        self.replicated = trio.Event()  # replaced whenever peer_holds grows
        self.stop_requested = trio.Event()  # set by `crdtbook leave` once it is done
        self.stopping = False  # set once a stop begins: peers failing then is expected
        self.stop_begun = trio.Event()  # ... and this: peers' streams end (peerstream.py)
        # history that compaction took out of memory but the journal has not committed yet
        self.unflushed_orders: dict[tuple[str, int], tuple] = {}
        self.unflushed_fills: list = []
        self.unflushed_events: list = []  # every event compaction took out, in its order
        self.recovered = replayed
        # A restarted member takes no order before one peer has answered a pull:
        # if its store lost acknowledged events (a lost WAL, a stale backup), a
        # peer holding them shows it, before a new event reuses one of their seqs.
        self.caught_up = fresh  # a new replica has nothing a store could have lost
        # when the last snapshot was written; None: one is due at the first compaction.
        # A store that replayed nothing at start (new, or stopped with a snapshot)
        # is where a snapshot would put it: the first can wait an interval.
        self._snapshot_at: float | None = None if replayed else monotonic()
        self.registry = Registry(config.registry_ttl_s)
        self.peers: dict[str, Peer] = {}
        # URLs of peers whose replica left, was evicted or convicted: not taken back
        # from a registry (it lists them until their TTL), only from a new replica
        self.retired_urls: dict[str, str] = {}
        self.url = ""  # set once the server is bound
        self.rpc_port: int | None = None  # the PeerRPC port, once bound
        self.key = f"crdtbook:{config.book}"  # announced with the HTTP port
        self.rpc_key = f"{self.key}:rpc"  # announced with the PeerRPC port
        self.clock_ms = clock_ms or (lambda: math.floor(time.time() * 1000))
        self.monotonic = monotonic
        self.auth = config.auth and not config.insecure_no_auth
        self.limiter = auth.RateLimiter(config.rate_limit, config.rate_burst, monotonic)
        self.peer_added = trio.Event()  # replaced each time a peer is added
        # set (and replaced) whenever the replica may show something new: events
        # taken or made, claims that can move the final frontier, compaction;
        # the stream hub (node/api/streams.py) waits on it
        self.changed = trio.Event()
        self.streams = None  # the stream hub, once the server started it
        # peer traffic this node initiated (both directions), for status and bench/
        self.conflict: str | None = None  # set if peers hold events under our id
        self.refused_messages = 0  # peers' messages the door refused whole
        self.client = None  # the node's peer client (cluster/peerhttp.py), set by the server
        # called with the cluster's join token (or "open") when this node founds one
        self.on_founded: Callable[[Node, str], None] | None = None
        # (error, detail) once a sponsor refused this node's join request (403)
        self.join_refused: tuple[str, str] | None = None
        if self.joined and self.join_token() is None and (config.join_token
                                                          or config.open_admission):
            self.keep_join_token(jointoken.OPEN if config.open_admission else config.join_token)
        secretfile.warn_if_readable(jointoken.path(self.store.directory),
                                    "join_token.readable_by_others")
        self.stats = {"pushed_events": 0, "push_requests": 0, "pulled_events": 0,
                      "pull_requests": 0, "wire_bytes": 0,
                      "stream_pushes": 0}  # of push_requests: over a peer stream
        # peers' streams served here (cluster/peerstream.py): open now, pushes answered
        self.streams_open = 0
        self.stream_pushes_answered = 0
        self.metrics = Metrics(self)  # this node's own registry (GET /metrics)
        self.journal.timed = self.metrics.commit_seconds.observe

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
        if url in self.retired_urls and not sticky:
            logs.debug("peer.ignored", peer=url, why=f"replica {self.retired_urls[url]} is out")
            return None
        if len(self.peers) >= MAX_PEERS and not sticky:
            unproven = self._unproven_peer()
            if unproven is None:
                logs.debug("peer.ignored", peer=url, why=f"already {MAX_PEERS} peers")
                return None
            self.forget_peer(unproven, "never answered; making room for another")
        peer = Peer(url, sticky)
        self.peers[url] = peer
        logs.info("peer.added", peer=url)
        self.peer_added.set()
        self.peer_added = trio.Event()
        return peer

    def _unproven_peer(self) -> str | None:
        """The discovered peer to give up first for a new one: one that never answered
        and has failed since it was added (a registry flood's entries look like that),
        the one failing longest. Peers that answered, and --peer ones, are kept."""
        candidates = [(p.failing_since, url) for url, p in self.peers.items()
                      if not p.sticky and p.last_seen is None and p.failing_since is not None]
        return min(candidates)[1] if candidates else None

    def forget_peer(self, url: str, why: str) -> None:
        peer = self.peers.pop(url, None)
        if peer is not None:
            logs.info("peer.forgotten", peer=url, why=why)
            self.metrics.forget_peer(url)
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

    def forget_retired(self) -> None:
        """Drop peers whose replica left, was evicted or was convicted of
        equivocation: it is out of the cluster for good, nothing to pull from it."""
        for url, peer in sorted(self.peers.items()):
            why = self._out(peer.replica)
            if why is not None:
                self.retired_urls.pop(url, None)  # newest last: the oldest go first
                self.retired_urls[url] = peer.replica
                while len(self.retired_urls) > MAX_PEERS:
                    del self.retired_urls[next(iter(self.retired_urls))]
                self.forget_peer(url, f"replica {peer.replica} {why}")

    def _out(self, replica: str | None) -> str | None:
        """Why ``replica`` is out of the cluster for good (None: it is not)."""
        if replica is None or replica == self.id:
            return None
        if replica in self.door.proofs:
            return "was convicted of equivocation"
        how = self.replica.retirement(replica)
        return None if how is None else phrase(how)

    def seen(self, url: str | None, replica: str | None) -> None:
        """A request or answer came from ``url`` (if it said) as ``replica``."""
        if not url:
            return
        if replica == self.id or self._out(replica) is not None:
            return
        if replica and self.retired_urls.get(url, replica) != replica:
            del self.retired_urls[url]  # a new replica at that address (--rejoin-as-new)
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
    def accept(self, blocks, claims=(), proofs=(), forks=(), may_found: bool = False) -> int:
        """Let a peer's blocks and claims in through the door; return new events.

        Raises ValueError (DoorError, ReplicaError), changing nothing, for a
        message that fails verification. Blocks stamped more than
        ``max_clock_ahead_s`` ahead of this node's wall clock are left for a
        later pull: taking them would drag this node's hybrid clock, and so
        every order placed here, into the future. Only the answer to this
        node's own join request ``may_found`` its cluster (see Door.admit).
        """
        try:
            admission = self.door.admit(blocks, claims, clock_limit=self._clock_limit(),
                                        proofs=proofs, forks=forks, may_found=may_found)
        except OwnFeedConflict as exc:
            self.refused_messages += 1
            if self.conflict is None:
                self.conflict = str(exc)
                logs.error("node.id_conflict", replica=self.id, detail=str(exc),
                           hint="this node's store lost events it had sent (restored from an "
                                "old backup, lost WAL), or another node runs with its key: "
                                "start a new replica (new --data-dir) and evict this one")
            raise
        except DoorError:
            self.refused_messages += 1
            raise
        return self._admitted(admission)

    def _admitted(self, admission) -> int:
        if admission.skipped:
            logs.debug("peer.blocks_skipped", **{k.replace(" ", "_"): v
                                                 for k, v in sorted(admission.skipped.items())})
        if admission.proofs:
            self._keep_proofs(admission.proofs)
        if admission.added:
            self._journal_fresh()
        else:
            self.notify_changed()  # claims alone can move the final frontier
        return admission.added

    async def arrive(self, message) -> int:
        """A peer's pushed blocks message (decoded), let in together with the other
        pushes that reached the node by the time it runs again (see
        ``merge_arrivals``); returns the events new in that merge. Raises like
        ``accept`` (nothing of this message changed) if it fails verification.
        Durable once ``journal.sync()`` returns after it.

        The merge runs here, in the push's own task, so it overlaps a commit
        under way rather than delaying the next one; one checkpoint first lets
        pushes that are ready at the same moment join it."""
        arrival = _Arrival(message)
        self._arrivals.append(arrival)
        await trio.sleep(0)
        if not arrival.done.is_set():
            self.merge_arrivals()
        if arrival.error is not None:
            raise arrival.error
        return arrival.added

    def merge_arrivals(self) -> None:
        """Merge every push waiting at once (called by ``arrive``, before local
        events are made, before a pull's answer is taken, and by the journal
        before each flush). One engine update takes them all: orders placed here
        after the oldest arriving event are undone and replayed once, not once
        per peer's push. If the messages together fail verification (nothing
        changed), each is let in on its own, so only a bad one fails.

        Only pushes of different origins' blocks merge together: the door
        judges a message's feed of one origin as a whole (past a gap or a
        skipped block, the rest of it is skipped; a fork is seen against held
        blocks), so two pushes of one origin in one call would not be judged
        as each alone: a forged block past a gap would hide an honest push of
        that origin, two versions of a block would pass for a duplicate."""
        arrivals, self._arrivals = self._arrivals, []
        group: list[_Arrival] = []
        origins: set[str] = set()
        for arrival in arrivals:  # in arrival order, a new group at a shared origin
            blocks = {b.replica for b in arrival.message.blocks}
            if not origins.isdisjoint(blocks):
                self._merge_together(group)
                group, origins = [], set()
            group.append(arrival)
            origins |= blocks
        if group:
            self._merge_together(group)

    def _merge_together(self, arrivals: list[_Arrival]) -> None:
        """Pushes of disjoint origins in one door call; any failure: each alone."""
        if len(arrivals) > 1:
            messages = [a.message for a in arrivals]
            try:
                admission = self.door.admit(
                    [b for m in messages for b in m.blocks],
                    [c for m in messages for c in m.claims], clock_limit=self._clock_limit(),
                    proofs=[p for m in messages for p in m.proofs],
                    forks=[f for m in messages for f in m.forks], may_found=False)
            except Exception:  # DoorError, ReplicaError (or a bug): each on its own below,
                pass  # so every push gets its own answer and none waits for ever
            else:
                added = self._admitted(admission)
                for arrival in arrivals:
                    arrival.added = added
                    arrival.done.set()
                return
        for arrival in arrivals:
            message = arrival.message
            try:
                arrival.added = self.accept(message.blocks, message.claims, message.proofs,
                                            message.forks)
            except Exception as exc:  # the push's handler answers for it (or fails)
                arrival.error = exc
            arrival.done.set()

    async def take(self, payload: bytes, may_found: bool = False) -> tuple[int, list[str]]:
        """A peer's answer (a blocks message): let in; returns the new events and the
        origins the peer suspects of a fork (to send skip lists for, next pull).

        Snapshots are never taken from peers: a peer answers with the signed
        blocks it holds (from its store) and this node replays them, computing
        its history itself.
        """
        message = await decoded(payload)
        self.merge_arrivals()  # pushes that came first go in first (no gap before these)
        added = self.accept(message.blocks, message.claims, message.proofs, message.forks,
                            may_found)
        convicted = self.door.proofs
        return added, [r for r in message.suspects if r not in convicted]

    def _clock_limit(self) -> int:
        """The highest clock taken from peers: ``max_clock_ahead_s`` past our wall clock."""
        return (self.clock_ms() + int(self.config.max_clock_ahead_s * 1000)) << LOGICAL_BITS

    def claims(self) -> list:
        """This node's claims for an outgoing message (its own renewed: a heartbeat).

        A claim promises no new event at or below its clock, so it never goes
        past the clock lease the store holds: after a crash, the restarted
        replica stamps its next event above the lease, keeping the promise.

        The own claim is renewed (and signed) at most every ``CLAIM_EVERY_S``:
        under load every push would otherwise cost a signature here and a
        check at every peer. A claim sent again is still true, only older.
        """
        now = self.monotonic()
        if self._own_claim is None or now - self._claimed_at >= CLAIM_EVERY_S:
            own = self.replica.claim(min(self.clock_ms(), self.lease >> LOGICAL_BITS))
            # the hybrid clock can be ahead of the lease (a peer's clock, a stalled
            # renewal): the promise sent never is
            self._own_claim = Claim(own.replica, own.seq, min(own.clock, self.lease))
            self._claimed_at = now
        return self.door.outgoing_claims(self._own_claim)

    def renew_lease(self) -> int:
        """Append a new clock lease (``clock_lease_ms`` past now); return it.
        It counts once durable: see ``lease_renewed``."""
        lease = max((self.clock_ms() + self.config.clock_lease_ms) << LOGICAL_BITS,
                    self.replica.clock.last)
        self.journal.meta(clock_lease=lease)
        return lease

    def lease_renewed(self, lease: int) -> None:
        self.lease = max(self.lease, lease)

    # -- durability --------------------------------------------------------
    def _journal_fresh(self) -> None:
        """Hand every event new to the replica to the journal (never waits); own
        events also wait to be sealed into the next commit's signed block."""
        fresh = self.replica.take_fresh()
        me = self.id
        if fresh:
            # Every event stands in a signed block the store writes no later than
            # this batch (own ones are sealed at the flush, peers' came in blocks
            # the door took): its row waits for compaction. One no block of this
            # node holds (none is expected) gets its row now, as schema 2 did.
            newest = newest_seqs(fresh)
            tip = self.door.tip
            loose = {r for r, seq in newest.items() if r != me and tip(r).last < seq}
            if loose:
                self.journal.events([e for e in fresh if e.replica in loose
                                     and tip(e.replica).last < e.seq])
                self.journal.held([e for e in fresh if e.replica not in loose
                                   or tip(e.replica).last >= e.seq])
            else:
                self.journal.held(fresh)
        self.notify_changed(fresh)
        if fresh and me in newest:  # a peer's push holds none: no pass over it
            self._unsealed.extend(compress(fresh, map(me.__eq__, map(_replica, fresh))))
        if self.retired is None:
            how = self.replica.retirement(self.id)
            if how is not None:
                self.retired = how
                self.journal.meta(retired=how)
                (logs.info if how == "left" else logs.error)(
                    "node.retired", replica=self.id, how=how,
                           hint="this replica creates no more events; restart with "
                                "--rejoin-as-new to join again as a new replica")

    def notify_changed(self, fresh=()) -> None:
        """Wake whoever waits on ``changed`` (cheap: nobody waits unless someone
        subscribed to a stream); the hub also sees the new events."""
        if self.streams is not None and fresh:
            self.streams.note_events(fresh)
        self.changed.set()
        self.changed = trio.Event()

    def _restore_proofs(self) -> None:
        """Convictions held before a restart (the proofs are kept in the store's meta)."""
        held = self.store.meta.get("proofs")
        if held:
            proofs = decode_proofs(held)
            self.door.proofs.update({p.replica: p for p in proofs})
            for proof in proofs:
                self.replica.convict(proof.replica, proof.cut)

    def _keep_proofs(self, new) -> None:
        for proof in new:
            logs.error("peer.convicted", replica=proof.replica, cut=proof.cut, kind=proof.kind,
                       hint="it signed two versions of its feed, or broke a signed promise; "
                            "its events after the cut are rejected everywhere: evict it")
        self.journal.meta(proofs=encode_proofs(self.door.proofs.values()))

    def _seal(self) -> list[Verified]:
        """The journal's sealer: own events since the last commit, as one signed block."""
        if not self._unsealed:
            return []
        events, self._unsealed = sorted(self._unsealed, key=lambda e: e.seq), []
        block = self.door.seal(events)
        return [Verified(block, self.door.tips[self.id].hash)]

    @property
    def unsealed(self) -> bool:
        """Own events wait for the next flush to seal them (not sent yet)."""
        return bool(self._unsealed)

    def _push_sealed(self, sealed: list[Verified]) -> None:
        """The journal's hook once own blocks are durable: push them to every peer."""
        self.push([v.block for v in sealed])

    def note_held(self, replica: str | None, seq: int) -> None:
        """Peer ``replica`` holds this node's events up to ``seq`` (for ack=replicated)."""
        if replica and replica != self.id and seq > self.peer_holds.get(replica, 0):
            self.peer_holds[replica] = seq
            self.replicated.set()
            self.replicated = trio.Event()

    def replicas_holding(self, seq: int) -> int:
        return sum(1 for held in self.peer_holds.values() if held >= seq)

    def close(self) -> None:
        store = getattr(self, "store", None)
        if store is None:
            return
        store.close()
        if store.ephemeral:
            shutil.rmtree(store.directory, ignore_errors=True)
        self.store = None


    @property
    def joined(self) -> bool:
        return self.replica.is_member(self.id)

    def ready_to_trade(self, forced: bool = False) -> None:
        """Raise NotReady unless this node may create events.

        ``forced`` (an operator's evict with force) skips the wait for a peer
        after a restart: when every other member is gone for good, evicting
        them is the only way forward, and nobody is left to hold a lost event.
        """
        if self.retired is not None:
            raise NotReady(self.retired, f"replica {self.id} {phrase(self.retired)} and "
                                         "creates no more events", status=409)
        if self.journal.failed:
            raise NotReady("store_failed", f"the store failed ({self.journal.failed}); "
                                           "restart the node once the disk is fixed")
        if self.conflict is not None:
            raise NotReady("conflict", "peers hold events under this replica's id that this "
                                       "node never made or no longer has (another node uses "
                                       "this id, or this store lost acknowledged events); it "
                                       "stopped accepting orders")
        if not self.joined:
            raise NotReady("joining", "this node has not joined the cluster yet; retry shortly")
        if not self.caught_up and not forced \
                and any(r != self.id for r in self.replica.members()):
            raise NotReady("catching_up", "this node restarted and waits to hear from a peer "
                                          "before it takes orders; retry shortly")

    # -- admission ---------------------------------------------------------------
    def join_token(self) -> str | None:
        """The join token this member admits with (``"open"``: none needed), read
        from the data directory each time (a rotation counts at once); None if
        it keeps none. StoreError if the file is unusable."""
        return jointoken.read(self.store.directory)

    def keep_join_token(self, token: str) -> None:
        """Keep the token this node founded or was admitted with (one kept stays)."""
        jointoken.save(self.store.directory, token)

    def bootstrap(self) -> None:
        """Found a new cluster, keeping its join token first (``--open``: none,
        ``--join-token``: that one, else a new one)."""
        if self.join_token() is None:
            self.keep_join_token(jointoken.OPEN if self.config.open_admission
                                 else self.config.join_token or jointoken.new())
        self.replica.bootstrap(self.clock_ms(), key=self.signer.public)
        self._journal_fresh()
        logs.info("node.founded", replica=self.id, book=self.config.book)
        if self.on_founded is not None:
            self.on_founded(self, self.join_token())

    def sponsor(self, replica: str, key: bytes) -> None:
        """Admit ``replica``, whose public key is ``key`` (asked by a joining node).
        The answer is a first page of signed blocks; the joiner's pulls fetch the rest."""
        if replica not in self.replica.members():
            self.replica.join(replica, self.clock_ms(), key=key)
            self._journal_fresh()
            logs.info("node.admitted", replica=replica)

    def leave(self) -> AWORSet | None:
        if not self.joined:
            return None
        delta = self.replica.leave(self.clock_ms())
        self._journal_fresh()
        logs.info("node.left", replica=self.id)
        return delta

    def evict(self, replica: str) -> AWORSet:
        delta = self.replica.evict(replica, self.clock_ms())
        self._journal_fresh()
        logs.warning("node.evicted", replica=replica)
        return delta

    # -- accounts --------------------------------------------------------
    def add_account(self, name: object) -> tuple[dict, str]:
        """Make account ``name`` (ValueError if it cannot be); its view and token.
        Durable once ``journal.sync()`` returns."""
        row, token = self.accounts.new(name, self.clock_ms())
        self.accounts.put(row)
        self.journal.account(row)
        logs.info("account.added", account=row.name)
        return account_json(row), token

    def revoke_account(self, name: str) -> dict:
        """Revoke account ``name`` (KeyError if no such live account): its token
        stops working at once; durable once ``journal.sync()`` returns."""
        row = self.accounts.revoked(name, self.clock_ms())
        self.accounts.put(row)
        self.journal.account(row)
        if self.streams is not None:  # its open orders watches end now
            self.streams.recheck()
        logs.info("account.revoked", account=row.name)
        return account_json(row)

    # -- local events ----------------------------------------------------
    def place_many(self, orders) -> list:
        """Place validated orders (sealed and pushed with the next commit). Returns the
        Placed list."""
        self.ready_to_trade()
        # blocks already here go in first: orders stamped after them would be undone
        # and replayed when they merge (their events sort before these orders)
        self.merge_arrivals()
        # One call for the batch: every order is checked before any is placed, so a
        # refusal leaves nothing placed (no half-placed batch to answer for).
        placed = self.replica.place_many(orders, now_ms=self.clock_ms())
        self._journal_fresh()
        self.metrics.placed(placed)
        return placed

    def cancel(self, dot):
        self.ready_to_trade()
        self.merge_arrivals()  # as place_many: what already arrived sorts first
        result = self.replica.cancel(dot, now_ms=self.clock_ms())
        self._journal_fresh()
        self.metrics.cancelled()
        return result

    def push(self, blocks: list) -> None:
        item = (self.clock_ms(), blocks)
        for peer in list(self.peers.values()):
            try:
                peer.outbox_send.send_nowait(item)
            except trio.WouldBlock:
                peer.dropped += 1  # the peer is slow or down; pull will repair

    # -- compaction and history ------------------------------------------------
    def compact(self) -> int:
        """Trim memory below the final frontier; hand what left it to the journal.

        Final fills and final order states go to the store with a new snapshot
        in one batch; until that batch commits they stay readable from
        ``unflushed_*`` (see api/history.py). Returns events removed from memory.
        """
        with gcpolicy.compaction():
            return self._compact()

    def _compact(self) -> int:
        replica = self.replica
        if self.streams is not None:
            self.streams.publish()  # trades about to leave memory are on the streams first
        done = replica.compact()
        if not done.removed and not done.fills:
            return 0
        orders = [final_order(view) for view in done.orders]
        fills = [stored_fill(done.fills_start + i, raw) for i, raw in enumerate(done.fills)]
        for order, view in zip(orders, done.orders, strict=True):
            self.unflushed_orders[(order.replica, order.seq)] = (view, order)
        self.unflushed_fills.extend(fills)
        self.unflushed_events.extend(done.events)
        finals = iter(orders)  # in the order of their events
        rows = [(e, next(finals) if e.kind == ORDER else None) for e in done.events]
        self.journal.history([], fills, self._snapshot_if_due(), rows)
        bodies = self.journal.bodies
        if len(bodies) > 2 * replica.event_count() + STRAY_BODIES:
            # events that left memory other than by compaction (a feed replayed
            # after a conviction rebuilds the replica): their bodies are never taken
            held, leaving = replica.state.get, {id(e) for e in done.events}
            self.journal.forget_bodies(
                lambda e: id(e) in leaving or held(e.replica, e.seq) is e)
        return done.removed

    def snapshot_now(self) -> None:
        """Append a snapshot (a graceful stop: the next start replays nothing)."""
        self._snapshot_at = None
        self.journal.history([], [], self._snapshot_if_due())

    def _snapshot_if_due(self) -> tuple[int, int, bytes] | None:
        """A snapshot for the store, at most every ``snapshot_interval_s``.

        Building one costs a pass over everything held in memory; a restart
        replays the events stored after the last one, so this trades CPU now
        for seconds at restart (events after F, at most an interval's worth).
        """
        now = self.monotonic()
        if self._snapshot_at is not None \
                and now - self._snapshot_at < self.config.snapshot_interval_s:
            return None
        self._snapshot_at = now
        replica = self.replica
        snapshot = replica.snapshot_state()
        body = encode_snapshot(snapshot, replica.claims())
        return snapshot.final, snapshot.fills_base, body

    def history_committed(self, orders: int, fills: int, events: int = 0) -> None:
        """The oldest ``orders``/``fills``/``events`` of the unflushed history are in
        the store now."""
        unflushed = self.unflushed_orders
        if orders >= len(unflushed):
            unflushed.clear()
        else:
            for key in list(itertools.islice(unflushed, orders)):
                del unflushed[key]
        del self.unflushed_fills[:fills]
        del self.unflushed_events[:events]

    # -- views -----------------------------------------------------------
    def status(self) -> dict:
        now = self.monotonic()
        final = self.replica.frontier()
        newest = self.replica.newest_clock()
        holder = self._holder(final)
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
                    "failing_s": None if peer.failing_since is None
                    else round(now - peer.failing_since, 1),
                    "error": peer.last_error,
                }
                for peer in sorted(self.peers.values(), key=lambda p: p.url)
            ],
            "events": self.replica.event_count(),
            "events_total": self.replica.events_total(),
            "applied": self.replica.applied_count(),
            "digest": self.replica.digest(),
            "clock": self.replica.clock.last,
            "final_clock": final,
            "final_time": iso_time(final) if final else None,
            "final_lag_ms": max(0, (newest - final) >> LOGICAL_BITS) if final else None,
            "members": self.replica.members(),
            "held_back_by": holder,
            "member_health": self._member_health(holder),
            "joined": self.joined,
            "caught_up": self.caught_up,
            "retired": self.retired,
            "evicted": self.retired == "evicted",
            "data_dir": None if self.store is None or self.store.ephemeral
            else self.store.directory,
            "store": {"commits": self.journal.commits,
                      "committed_events": self.journal.committed_events,
                      "failed": self.journal.failed},
            "conflict": self.conflict,
            "public_key": self.signer.public.hex(),
            # what the door turned away: whole messages (a bad signature), and
            # blocks or claims by reason (below the final frontier, strangers, ...)
            "refused": {"messages": self.refused_messages,
                        **{k.replace(" ", "_"): v for k, v in sorted(self.door.refused.items())}},
            "registry": self.config.registry_url or "embedded",
            "rpc": (f"{self.config.rpc_host}:{self.rpc_port}" if self.rpc_port else None),
            "finality": {"regressions": self.replica.frontier_regressions,
                         "violations": self.replica.frontier_violations},
            "gossip": dict(self.stats,
                           dropped_pushes=sum(p.dropped for p in self.peers.values())),
        }

    def _member_health(self, holder: dict | None) -> list[dict]:
        """Per member, by replica: its address (if a peer of this node), its health,
        when this node last heard from it (its newest claim or event, relayed or
        not), and whether it is the one holding the final frontier back.

        health: ``self``; ``convicted`` (signed two versions of its feed);
        ``unreachable`` (this node's calls to it fail); ``silent`` (nothing heard
        from it for ``SILENT_AFTER_S``); ``ok``.
        """
        wall = self.clock_ms()
        by_replica: dict[str, list[Peer]] = {}
        for peer in sorted(self.peers.values(), key=lambda p: p.url):
            if peer.replica:
                by_replica.setdefault(peer.replica, []).append(peer)
        out = []
        for replica in self.replica.members():
            peers = by_replica.get(replica, [])
            reachable = [p for p in peers if p.failing_since is None]
            heard = None if replica == self.id else self.replica.last_heard(replica) or None
            heard_s = None if heard is None else max(0, wall - (heard >> LOGICAL_BITS)) / 1000
            if replica == self.id:
                health = "self"
            elif replica in self.door.proofs:
                health = "convicted"
            elif peers and not reachable:
                health = "unreachable"
            elif heard_s is None or heard_s > SILENT_AFTER_S:
                health = "silent"
            else:
                health = "ok"
            failing = [p for p in peers if p.failing_since is not None]
            out.append({
                "replica": replica,
                "self": replica == self.id,
                "url": self.url if replica == self.id else
                (reachable or peers)[0].url if peers else None,
                "health": health,
                "last_heard_clock": heard,
                "last_heard": None if heard is None else iso_time(heard),
                "last_heard_s": None if heard_s is None else round(heard_s, 3),
                "error": failing[0].last_error if failing and not reachable else None,
                "holds_back_final": holder is not None and holder["replica"] == replica,
            })
        return out

    def _holder(self, final: int) -> dict | None:
        """Who holds the final frontier back, and since when (wall-clock of what counts)."""
        holder = self.replica.frontier_holder()
        if holder is None or not final:
            return None
        replica, counted = holder
        behind = max(0, self.clock_ms() - (counted >> LOGICAL_BITS))
        return {"replica": replica, "counted_clock": counted,
                "since": iso_time(counted) if counted else None, "behind_ms": behind}

    def context(self) -> dict:
        """For each origin replica, the highest seq held with no gap before it."""
        cc = self.replica.state.context
        return {replica: cc.contiguous(replica) for replica in cc.replicas()}


class _Arrival:
    """A pushed message waiting to be merged, and what came of it."""

    __slots__ = ("message", "done", "added", "error")

    def __init__(self, message) -> None:
        self.message = message
        self.done = trio.Event()
        self.added = 0
        self.error: Exception | None = None


LARGE_MESSAGE = 64 * 1024
# One large decode at a time per trio run. A RunVar, not a module-level limiter: a
# decode abandoned by a run that then ended (in tests, each test is a run of its own)
# never gives its token back, and held every later run's large decodes forever.
_DECODING: trio.lowlevel.RunVar = trio.lowlevel.RunVar("crdtbook_decoding")


def _decoding() -> trio.CapacityLimiter:
    try:
        return _DECODING.get()
    except LookupError:
        limiter = trio.CapacityLimiter(1)
        _DECODING.set(limiter)
        return limiter


async def decoded(payload: bytes):
    """A blocks message decoded; a large one on a worker thread, one at a time.

    Decoding is pure (it changes nothing), so it can leave the event loop: a
    flood of large messages then waits its turn instead of stalling every
    other request (the scan is Python and yields the interpreter every few
    milliseconds; cbor2's own pass is bounded by the scan's caps). A cancel
    does not wait for it (a 64 MiB message takes seconds: a stopping node's
    bounds must hold); the thread keeps its place in the limiter until done.
    """
    if len(payload) <= LARGE_MESSAGE:
        return decode_blocks_message(payload)
    try:
        return await trio.to_thread.run_sync(decode_blocks_message, payload,
                                             limiter=_decoding(), abandon_on_cancel=True)
    except Exception as exc:
        # The worker thread's last frame keeps the outcome that holds the exception,
        # whose traceback (or its context's) leads back to that frame: a cycle whose
        # frames hold the payload, freed only by a collection (and once a compaction
        # froze it, at the thaw: a stranger's refused megabyte pushes piled up,
        # tests/test_attacks21.py). Without them the exception holds nothing there.
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        raise


def newest_seqs(events) -> dict[str, int]:
    """Each replica's highest seq among ``events``. They come as the replica took
    them: a peer's push in dot order, own orders in seq order, so in a few runs
    of one replica each, and each run's top is found at C speed (any order
    gives the same answer, a run per event at worst)."""
    newest: dict[str, int] = {}
    for replica, run in groupby(events, _replica):
        top = max(map(_seq, run))
        if top > newest.get(replica, 0):
            newest[replica] = top
    return newest


_replica, _seq = itemgetter(1), itemgetter(2)


def iso_time(clock: int) -> str:
    """The wall-clock part of a hybrid clock, ISO 8601 UTC with milliseconds."""
    ms = clock >> LOGICAL_BITS
    return f"{_iso_second(ms // 1000)}{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    # Answers show many events of the same second: format each second once.
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.")


def account_json(row) -> dict:
    return {"account": row.name, "created": iso_time(row.created << LOGICAL_BITS),
            "revoked": None if row.revoked is None else iso_time(row.revoked << LOGICAL_BITS)}


def final_order(view) -> FinalOrder:
    """The stored final state of an order (an ``OrderView`` that is final)."""
    replica, seq = view.dot
    return _new(FinalOrder, (replica, seq, view.status, view.filled, view.reason))


def stored_fill(index: int, raw) -> StoredFill:
    """A fill as the store keeps it, from the engine's (taker, maker, price, qty) record."""
    taker, maker, price, qty = raw
    t, m = taker.event, maker.event
    return _new(StoredFill, (index, t.clock, (t.replica, t.seq), (m.replica, m.seq), price, qty,
                             t.side, t.account, m.account))


_new = tuple.__new__  # NamedTuples without their Python-level __new__: one per order and fill
