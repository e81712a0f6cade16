"""Gossip: the node's background tasks — join, push, pull and discovery.

Theory of operation
-------------------
* **Join.** A node started with peers (or a registry that knows some) asks
  them to admit it with a signed join request carrying its join token
  (``POST /peer/join``, see admission.py): a sponsor adds a join event for
  it to the set. Until the node holds its own join it refuses orders. A
  sponsor's 403 (a wrong token, a clock far off) stops the node. A node
  with nobody to ask founds a new cluster (a self-join), keeping the
  cluster's join token.
* **Bootstrap-expect.** Nodes started together with ``bootstrap_expect N``
  found nothing on their own: each asks the peers it finds who they are
  (``GET /peer/hello``) until N nodes of the book (itself included) are
  bootstrapping; the smallest id founds, the others join it. A peer that is
  a member already is simply asked to admit the node.
* **Push.** Every peer has a sender task draining its outbox: it takes what
  is queued (up to ``PUSH_BATCH`` block lists, each durable here) and sends
  it as one push, with up to ``PUSHES_IN_FLIGHT`` pushes under way to
  the peer (sent in order; one that overtakes the other on the way waits at
  the receiver for it, briefly, see peerapi.py). A push is a
  ``POST /peer/push``, or, with ``peer_stream`` on (``--peer-stream``), one
  message on the one WebSocket the sender keeps open to the peer's
  ``/peer/stream`` (pushstream.py; about a third less of the receiver's CPU
  per small push), and a POST again to a peer that refuses that upgrade.
  A failure drops that batch and backs the peer off; pull repairs whatever
  push lost.
* **Pull.** Every ``pull_interval_s`` (jittered by +-20%), each peer's puller
  sends the node's causal context to that peer and merges the delta that
  comes back: exactly the events the node lacks, at most ``PAGE`` of them (a
  full page is followed at once by the next). A new or restarted node catches
  up this way.
* **Claims.** Every push, pull and answer carries the sender's claims (its
  own renewed at send time), so pulls double as heartbeats and the final
  frontier advances while the book is idle.
* **Compaction.** Every ``compact_interval_s`` the node drops settled
  history, at a moment when nothing it stamped waits for its commit or its
  push (``_compacted_between_pushes``): the stall would age that push by
  its length, and every peer would undo that much more.
* **Discovery.** At start and every ``announce_interval_s`` the node
  announces ``crdtbook:<book>`` with its port to a registry and looks the key
  up. With the embedded registry, "a registry" is every known peer's own
  (``--peer URL`` is enough: the node announces itself there and learns what
  that peer knows); with ``--registry URL``, just that one. Peers that fail
  for longer than the registry's TTL are forgotten (unless given with
  ``--peer``), and so are peers whose replica left, was evicted or was
  convicted, at once and for good (a registry still listing them is ignored).

Per-peer tasks mean a slow or dead peer only ever delays itself; every wait
is a trio timeout scope, every answer is read up to a size limit, and no
answer from a peer can crash the node (anything unexpected is a failed call:
logged, backed off). Calls go through the node's ``peerhttp.PeerClient``
(HTTP/1.1 by h11, connections kept alive per peer; see peerhttp.py).
"""

from __future__ import annotations

import json
import random
import secrets
import time

import trio

from crdtbook.feedwire import encode_blocks, encode_pull

from .. import logs
from ..service import PAGE, Node, Peer
from ..store import jointoken
from ..store.journal import StoreFailed
from . import admission, peerauth, pushage, pushstream
from .peerhttp import Answer, AnswerTooLarge, PeerClient

PUSH_BATCH = 1_000
PUSHES_IN_FLIGHT = 4  # per peer: see _sender (docs/performance.md, rewinds, 7th and 8th pass)
# a compaction waits this long at most for the outboxes to drain, polling this often, and
# lets the loop run this many rounds before and after it (_compacted_between_pushes)
QUIET_WAIT_S, QUIET_POLL_S, QUIET_ROUNDS = 0.1, 0.001, 8
PUSH_BYTES = 4 * 1024 * 1024  # block bytes per push at most (one block more); see below
PUSH_BODY_LIMIT = 16 * 1024 * 1024  # what a node reads of a peer request (push, pull)
REGISTRY_ANSWER_LIMIT = 256 * 1024


class CallFailed(Exception):
    """A peer call that did not give a usable answer (``status``: the HTTP status
    of an answer that came, with its ``body``)."""

    def __init__(self, message: str, status: int | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


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


async def post(client: PeerClient, url: str, body: bytes, headers: dict,
               timeout: float, limit: int, expect: int = 200,
               method: str = "POST") -> Answer:
    """POST and read the answer up to ``limit`` bytes; CallFailed for anything else."""
    try:
        with trio.fail_after(timeout):
            response = await client.request(method, url, body, headers, limit)
    except AnswerTooLarge as exc:
        raise CallFailed(str(exc)) from None
    except trio.TooSlowError:
        raise CallFailed(f"no answer within {timeout:g}s") from None
    except Exception as exc:  # refused, reset, bad URL, protocol error: all one outcome
        raise CallFailed(f"{type(exc).__name__}: {exc}") from None
    if response.status_code != expect:
        raise CallFailed(f"answered {response.status_code}: {response.content[:200]!r}",
                         response.status_code, response.content)
    return response


async def run(node: Node, client: PeerClient) -> None:
    """All gossip tasks; returns only when cancelled."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_peer_tasks, node, client, nursery)
        nursery.start_soon(_discovery_loop, node, client)
        if node.config.compact_interval_s:
            nursery.start_soon(_compaction_loop, node)
        if not node.joined:
            nursery.start_soon(_join_loop, node, client)


async def _peer_tasks(node: Node, client: PeerClient, nursery: trio.Nursery) -> None:
    """Give every peer, including ones found later, its own sender and puller."""
    while True:
        for peer in list(node.peers.values()):
            if not peer.started:
                peer.started = True
                nursery.start_soon(_peer_main, node, client, peer)
        await node.peer_added.wait()


async def _peer_main(node: Node, client: PeerClient, peer: Peer) -> None:
    with trio.CancelScope() as scope:
        peer.cancel_scope = scope
        if node.peers.get(peer.url) is not peer:  # forgotten before it started
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sender, node, client, peer)
            nursery.start_soon(_puller, node, client, peer)


# -- join ----------------------------------------------------------------------
WAITING_EVERY_S = 5.0
MAX_GROUP = 64  # ids a bootstrapping hello may name


async def _join_loop(node: Node, client: PeerClient) -> None:
    """Ask known peers to admit this node; found a cluster if there is nobody to ask
    (or, with ``bootstrap_expect``, if this node is the one of the group to found).

    All known peers are asked at once: a dead or hanging one costs nothing. A
    sponsor that refuses the request (403: a wrong token, a clock far off)
    ends the wait: asking again would not change the answer.
    """
    waited = 0.0
    said = None
    while not node.joined:
        peers = sorted(node.peers)
        if node.config.bootstrap_expect > 1:
            peers, said = await _expected_group(node, client, peers, said)
            if node.joined:
                return
        else:
            nobody = not peers and not node.config.peers
            if nobody and (node.config.registry_url is None
                           or waited >= node.config.pull_interval_s * 2):
                node.bootstrap()
                return
        if peers:
            refused: list[tuple[str, str, str]] = []
            with trio.move_on_after(node.config.request_timeout_s * 4):
                async with trio.open_nursery() as nursery:
                    for url in peers:
                        nursery.start_soon(_ask_to_join, node, client, url,
                                           nursery.cancel_scope, refused)
            if node.joined:
                return
            if refused:
                url, error, detail = refused[0]
                node.join_refused = (error, detail)
                logs.error("node.join_refused", sponsor=url, error=error, detail=detail[:300])
                node.stop_requested.set()
                return
        await trio.sleep(node.config.pull_interval_s / 2)
        waited += node.config.pull_interval_s / 2


async def _expected_group(node: Node, client: PeerClient, peers: list[str],
                          said: float | None) -> tuple[list[str], float | None]:
    """``--bootstrap-expect N``: learn who the known peers are. If one is a member
    already, ask the members to admit this node. Else, once N nodes (this one
    included) are bootstrapping for this book, the smallest id founds and the
    others wait for it. Returns the peers to ask now, and when "waiting" was
    last logged."""
    hellos: dict[str, dict] = {}
    token = node.config.join_token  # None with --open: then any hello counts
    nonce = secrets.token_hex(16)

    async def hello(url: str) -> None:
        try:
            response = await post(client, f"{url}/peer/hello?nonce={nonce}", b"",
                                  peer_headers(node), node.config.request_timeout_s, 4096,
                                  method="GET")
            answer = json.loads(response.content)
        except (CallFailed, ValueError):
            return
        if token is not None and not admission.proven(
                admission.hello_proof(token, nonce, response.content),
                response.headers.get("x-crdtbook-hello-proof")):
            return  # it does not hold the token: not one of the group, not a sponsor
        if isinstance(answer, dict) and answer.get("book") == node.config.book \
                and isinstance(answer.get("replica"), str):
            hellos[url] = answer

    async with trio.open_nursery() as nursery:
        for url in peers:
            nursery.start_soon(hello, url)
    members = sorted(url for url, h in hellos.items() if h.get("joined") is True)
    if members:
        return members, said
    group = {node.id}
    for h in hellos.values():
        if isinstance(h.get("bootstrap_expect"), int) and h["bootstrap_expect"] > 1:
            group.add(h["replica"])
            # and whom it has found: a node known to a peer of ours counts too (the
            # smallest id must learn of every other, however they were started)
            seen = h.get("group")
            if isinstance(seen, list):
                group.update(r for r in seen[:MAX_GROUP] if isinstance(r, str) and r)
    node.bootstrap_group = sorted(group)[:MAX_GROUP]
    expect = node.config.bootstrap_expect
    if len(group) >= expect:
        if min(group) == node.id:
            logs.info("node.bootstrap_expect_met", nodes=len(group), founder=node.id)
            node.bootstrap()
        return [], said  # the founder is another: its hello says joined once it is
    now = node.monotonic()
    if said is None or now - said >= WAITING_EVERY_S:
        logs.info("node.bootstrap_waiting", found=len(group), expected=expect,
                  detail=f"waiting for {len(group)} of {expect} expected nodes")
        said = now
    return [], said


async def _ask_to_join(node: Node, client: PeerClient, url: str,
                       done: trio.CancelScope, refused: list) -> None:
    token = node.config.join_token
    if token is None:
        kept = node.join_token()  # --rejoin-as-new: the token the old replica joined with
        token = kept if kept != jointoken.OPEN else None
    body = admission.request(node.signer, node.config.book, token, node.clock_ms())
    try:
        response = await post(client, url + "/peer/join", body, peer_headers(node),
                               node.config.request_timeout_s * 4, node.config.peer_body_limit)
        if token is not None and not admission.proven(
                admission.answer_proof(token, body, response.content),
                response.headers.get("x-crdtbook-admission-proof")):
            # not a member of the cluster whose token we hold: never take its state
            raise CallFailed(f"{url} answered the join without proof that it knows the "
                             "join token (not a member of this cluster)")
        node.metrics.exchanged(response.sent, response.received)
        await node.take(response.content, may_found=True)  # the one answer that may found
    except (CallFailed, ValueError) as exc:
        if isinstance(exc, CallFailed) and exc.status == 403:
            refused.append((url, *_error_of(exc.body)))
            return
        peer = node.peers.get(url)
        if peer is not None:  # a --peer that cannot be reached: said every few seconds
            _failed(node, peer, "join", exc)
        return
    if node.joined:
        open_ = response.headers.get("x-crdtbook-admission") == "open"
        node.keep_join_token(jointoken.OPEN if open_ or token is None else token)
        logs.info("node.joined", replica=node.id, sponsor=url)
        done.cancel()


def _error_of(body: bytes) -> tuple[str, str]:
    """(error, detail) of a refusal's JSON body."""
    try:
        answer = json.loads(body)
        return str(answer["error"])[:64], str(answer["detail"])[:500]
    except (ValueError, KeyError, TypeError):
        return "refused", body[:200].decode("utf-8", "replace")


# -- push ----------------------------------------------------------------------
async def _sender(node: Node, client: PeerClient, peer: Peer) -> None:
    """Drain the peer's outbox into pushes, up to ``PUSHES_IN_FLIGHT`` at once: blocks
    go out as soon as they are durable, not after the push in flight is answered
    (that answer waits for the peer's commit). A slot is taken before the outbox
    is read, so a push takes everything queued by the time it may go."""
    slots = trio.Semaphore(PUSHES_IN_FLIGHT)
    async with trio.open_nursery() as nursery:
        # its connection's reader lives in this nursery: it ends with the sender
        stream = pushstream.PushStream(node, peer.url, nursery) if node.config.peer_stream \
            else None
        while True:
            await slots.acquire()
            try:
                first = await peer.outbox.receive()
            except BaseException:
                slots.release()
                raise
            batch = [first]
            while len(batch) < PUSH_BATCH:
                try:
                    batch.append(peer.outbox.receive_nowait())
                except trio.WouldBlock:
                    break
            if not peer.ready(node.monotonic()):
                peer.dropped += len(batch)
                slots.release()
                continue
            nursery.start_soon(_push_batch, node, client, peer, batch, slots,
                               nursery.cancel_scope, stream)


async def _push_batch(node: Node, client: PeerClient, peer: Peer, batch: list,
                      slots: trio.Semaphore, sender: trio.CancelScope,
                      stream: pushstream.PushStream | None = None) -> None:
    try:
        # sealed once durable: send as is
        blocks = [b for _, blocks in batch for b in blocks]
        oldest = pushage.oldest_ms(batch[0][1])
        pushage.observe(node, "sealed", oldest, batch[0][0])
        pushage.observe(node, "sent", oldest)
        for part in _parts(blocks):
            sent = await _push(node, client, peer, part, stream)
            if sent is None:
                sender.cancel()  # the peer is this node
                return
            if not sent:
                peer.dropped += len(batch)
                break
    finally:
        slots.release()


def _parts(items: list, size_of=lambda block: len(block.body)) -> list[list]:
    """``items`` (blocks, or proofs) in pushes of at most ``PUSH_BYTES`` of block bodies
    (a larger item goes alone): a receiver reads at most ``PUSH_BODY_LIMIT`` of a request."""
    parts: list[list] = [[]]
    size = 0
    for item in items:
        if parts[-1] and size + size_of(item) > PUSH_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += size_of(item)
    return parts


def _proof_bytes(proof) -> int:
    return len(proof.block.body) + (len(proof.other.body) if proof.other is not None else 0)


async def _push(node: Node, client: PeerClient, peer: Peer, blocks: list,
                stream: pushstream.PushStream | None = None) -> bool | None:
    """One push (over ``stream`` when the peer speaks it, else HTTP); True if the peer
    took it, False if it failed, None if it is this node."""
    body = encode_blocks(blocks, node.claims())
    receipt = node.ack_waiting  # someone waits for replication: ask for a signed receipt
    started = time.perf_counter()
    try:
        response = None
        if stream is not None and stream.ready(node.monotonic()):
            response = await _stream_push(node, stream, body, receipt)
        if response is None:
            headers = peer_headers(node, with_url=False)
            if receipt:
                headers["x-crdtbook-ack"] = "1"
            response = await post(client, peer.url + "/peer/push", body, headers,
                                  node.config.request_timeout_s, 64 * 1024, expect=204)
    except CallFailed as exc:
        _failed(node, peer, "push", exc)
        return False
    took = time.perf_counter() - started
    replica = response.headers.get("x-crdtbook-replica")
    if node.is_self(peer.url, replica):
        return None
    node.metrics.push_seconds.labels(peer.url).observe(took)
    peer.ok(replica, node.monotonic())
    if peerauth.answer_from(node, replica, response.headers.get(peerauth.HEADER), body, b""):
        node.note_held(replica, _held_after(blocks, node.peer_holds.get(replica, 0)))
    node.stats["pushed_events"] += sum(b.last - b.first + 1 for b in blocks)
    node.stats["push_requests"] += 1
    _count_wire(node, response)
    return True


async def _stream_push(node: Node, stream: pushstream.PushStream, body: bytes,
                       receipt: bool) -> Answer | None:
    """A push over the peer's stream, as ``post`` makes one over HTTP (CallFailed for
    anything but a 204); None if the peer does not speak it (push over HTTP)."""
    timeout = node.config.request_timeout_s
    try:
        with trio.fail_after(timeout):
            response = await stream.push(body, receipt)
    except pushstream.NotSpoken as exc:
        logs.info("peer.stream_refused", peer=stream.url, status=exc.status,
                  detail=f"{exc}; pushing over HTTP for {pushstream.RETRY_S:g}s")
        return None
    except trio.TooSlowError:
        raise CallFailed(f"no answer within {timeout:g}s") from None
    except Exception as exc:  # refused, reset, closed, a protocol error: all one outcome
        raise CallFailed(f"{type(exc).__name__}: {exc}") from None
    if response.status_code != 204:
        raise CallFailed(f"answered {response.status_code}: {response.content[:200]!r}",
                         response.status_code, response.content)
    node.stats["stream_pushes"] += 1
    return response


def _count_wire(node: Node, response: Answer) -> None:
    """The HTTP/1.1 bytes of one exchange, as written and read (peerhttp counts them)."""
    node.stats["wire_bytes"] += response.sent + response.received
    node.metrics.exchanged(response.sent, response.received)


def _held_after(blocks: list, held: int) -> int:
    """Own seq a peer holds contiguously after taking ``blocks`` (it held ``held``)."""
    for block in blocks:
        if block.first <= held + 1 <= block.last + 1:
            held = max(held, block.last)
    return held


WARN_EVERY_S = 5.0
FORK_CHASES = 3  # extra pulls pull_everything makes to chase a suspected fork
EVERYTHING_S = 15.0  # pull_everything gives up on a peer not pulled dry by then
HAND_OVER_S = 3.0  # what a graceful stop spends pulling before its leave


def _failed(node: Node, peer: Peer, what: str, exc: BaseException,
            quiet: bool = False) -> None:
    now = node.monotonic()
    backoff = peer.failed(now)
    # A peer that stays unreachable is worth a warning every few seconds, not
    # only the first time: an operator tailing the log must see it. One failure
    # alone is not (info): a peer closing an idle keep-alive connection as the
    # request goes out, or a peer stopping a moment before this node does, fails
    # once and is gone or fine. ``quiet`` or stopping: this node is stopping (its
    # peers may be stopping too): debug only.
    quiet = quiet or node.stopping
    loud = (not quiet and peer.failures >= 2
            and (peer.warned_at is None or now - peer.warned_at >= WARN_EVERY_S))
    peer.last_error = str(exc) or type(exc).__name__
    detail = peer.last_error
    if loud:
        peer.warned_at = now
    node.metrics.peer_failures.labels(peer.url, what).inc()
    warned = peer.warned_at is not None  # (a clock may read 0.0)
    log = logs.warning if loud else logs.debug if quiet or warned else logs.info
    log(f"peer.{what}_failed", peer=peer.url, failures=peer.failures,
        backoff_s=round(backoff, 2), detail=detail[:200])


# -- pull ----------------------------------------------------------------------
async def _puller(node: Node, client: PeerClient, peer: Peer) -> None:
    interval = node.config.pull_interval_s
    while True:
        # holding nothing yet: wait for the join answer's first page (a pull that holds
        # nothing is refused unless a member signed it, see peerapi.py)
        if (node.joined or node.replica.events_total()) and peer.ready(node.monotonic()):
            while (await pull_one(node, client, peer) or 0) >= PAGE:
                pass  # a full page: there is more, go on at once
        await trio.sleep(interval * random.uniform(0.8, 1.2))


async def pull_one(node: Node, client: PeerClient, peer: Peer,
                   quiet: bool = False) -> int | None:
    """One pull exchange; returns how many events came back (None on failure, logged
    as a warning unless ``quiet``)."""
    context = node.replica.context()
    try:
        await node.journal.sync()  # the context counts as held (ack=replicated): durable
    except StoreFailed:
        return None
    door = node.door
    body = encode_pull(context, door.pull_tips().items(), node.claims(),
                       skips=door.skips(peer.suspects), convicted=door.convictions())
    headers = peer_headers(node) | {peerauth.HEADER: peerauth.sign_request(node, body)}
    try:
        started = time.perf_counter()
        response = await post(client, peer.url + "/peer/pull", body, headers,
                              node.config.request_timeout_s * 4, node.config.peer_body_limit)
        took = time.perf_counter() - started
        replica = response.headers.get("x-crdtbook-replica")
        if node.is_self(peer.url, replica):
            return 0
        node.metrics.pull_seconds.labels(peer.url).observe(took)
        added, peer.suspects = await node.take(response.content)
    except (CallFailed, ValueError) as exc:  # CodecError, DoorError and ReplicaError too
        _failed(node, peer, "pull", exc, quiet)
        return None
    peer.ok(replica, node.monotonic())
    more = response.headers.get("x-crdtbook-more") == "1"
    # caught up: a member (proven by its signature on this very answer) told us all it holds
    if not node.caught_up and not more and peerauth.answer_from(
            node, replica, response.headers.get(peerauth.HEADER), body, response.content):
        node.caught_up = True  # a member told us all it holds, of our own events too
        logs.info("node.caught_up", peer=peer.url)
    node.stats["pulled_events"] += added
    node.stats["pull_requests"] += 1
    _count_wire(node, response)
    if added:
        logs.info("pull.merged", peer=peer.url, events=added)
    return PAGE if more and added else added


async def pull_everything(node: Node, client: PeerClient,
                          within: float | None = None, quiet: bool = False) -> list[str]:
    """Pull from every peer until each has nothing more, and until a fork its answers
    point at is chased down (a few more pulls: skips, then evidence); return the peers
    not pulled dry: unreachable, or still sending after ``within`` seconds
    (``EVERYTHING_S``). Each pull is bounded, the loop is too: a member can sign one
    more event for every pull and say there is more, for ever."""
    within = EVERYTHING_S if within is None else within
    undrained: list[str] = []

    async def drain(peer: Peer) -> None:
        chases = 0
        with trio.move_on_after(within):
            while True:
                got = await pull_one(node, client, peer, quiet)
                if got is None:
                    break
                if got >= PAGE:
                    continue
                if not peer.suspects or chases == FORK_CHASES:
                    return
                chases += 1
        undrained.append(peer.url)

    async with trio.open_nursery() as nursery:
        for peer in list(node.peers.values()):
            nursery.start_soon(drain, peer)
    return sorted(undrained)


async def share_proofs(node: Node, client: PeerClient) -> None:
    """Push every equivocation proof held here to every peer (best effort, 1 s).

    A leaving node may be the only one that held some version of a forked feed:
    after ``pull_everything`` found the fork, this is how the others learn of it
    before the node is gone."""
    proofs = node.door.proofs_for({})
    if not proofs:
        return
    claims = node.claims()
    await _tell_every_peer(node, client, [encode_blocks([], claims, proofs=part)
                                          for part in _parts(proofs, _proof_bytes)],
                           "proofs.push_failed")


async def hand_over(node: Node, client: PeerClient, within: float | None = None,
                    quiet: bool = False) -> None:
    """Before a leave: pull from every peer (a fork between this node's version of a
    feed and theirs shows up here; ``within`` bounds it, see ``pull_everything``), then
    push the proofs held, whatever the pulls did (a peer that never answers must not
    keep the proof found at another from leaving). Without it, a version only this
    node held, and fills it reported final on it, would vanish with it and nobody
    would ever convict the origin that signed two versions."""
    await pull_everything(node, client, within, quiet)
    await share_proofs(node, client)


async def say_goodbye(node: Node, client: PeerClient) -> None:
    """On a graceful stop: hand over (at most a few seconds), leave, and push the leave
    to every peer (best effort, 1 s)."""
    if node.joined:
        # pulls, then proofs (1.5 s at most); its peers may be stopping too: no warnings
        await hand_over(node, client, HAND_OVER_S, quiet=True)
    delta = node.leave()
    if delta is None:
        return
    await node.journal.sync()  # sealed and durable: send that block (senders may be gone)
    leave = next(event for _, _, event in delta.entries())
    sealed = node.door.index.block_holding(node.id, leave.seq)
    body = encode_blocks([sealed.block] if sealed else [], node.claims())
    await _tell_every_peer(node, client, [body], "leave.push_failed")


async def _tell_every_peer(node: Node, client: PeerClient, bodies: list[bytes],
                           failed: str) -> None:
    """Push ``bodies`` (in order) to every peer at once, best effort: 1 s each, 1.5 s in
    all (the node is on its way out; a failure is logged as ``failed``)."""

    async def tell(peer: Peer) -> None:
        for body in bodies:
            try:
                await post(client, peer.url + "/peer/push", body,
                           peer_headers(node, with_url=False), 1.0, 64 * 1024, expect=204)
            except CallFailed as exc:  # the next part may still get through
                logs.debug(failed, peer=peer.url, detail=str(exc)[:200])

    with trio.move_on_after(1.5):
        async with trio.open_nursery() as nursery:
            for peer in list(node.peers.values()):
                nursery.start_soon(tell, peer)


async def _compaction_loop(node: Node) -> None:
    while True:
        await trio.sleep(node.config.compact_interval_s)
        await compact_once(node, between_pushes=True)


async def compact_once(node: Node, between_pushes: bool = False) -> int:
    """Compact, and wait until the history it took out of memory is in the store.

    ``between_pushes``: at a moment when nothing stamped here waits to be sent
    (see ``_compacted_between_pushes``): a compaction holds the event loop for a
    tenth of a second or more, and a sealed block waiting through it reaches
    every peer that much older."""
    orders, fills = len(node.unflushed_orders), len(node.unflushed_fills)
    events = len(node.unflushed_events)
    if between_pushes:
        removed = await _compacted_between_pushes(node)
    else:
        removed = node.compact()
    orders, fills = len(node.unflushed_orders) - orders, len(node.unflushed_fills) - fills
    events = len(node.unflushed_events) - events
    try:
        await node.journal.sync()
    except StoreFailed:
        return removed  # the history stays readable from memory until the node stops
    node.history_committed(orders, fills, events)
    if removed:
        logs.debug("node.compacted", events=removed, held=node.replica.event_count(),
                   final_clock=node.replica.frontier())
    return removed


async def _compacted_between_pushes(node: Node) -> int:
    """``node.compact()``, and the commit of what it took out of memory, where they
    cost the peers no rewind; returns the events removed.

    Both hold the event loop (the compaction a tenth of a second and more under
    load, the rows of its events as long again). A peer merging one of this
    node's blocks undoes every event it applied stamped after the block's
    oldest; an own event stamped and waiting for its commit, or a sealed block
    waiting for its push, when the loop stalls reaches the peers the stall's
    length older, and each undoes that much more (docs/performance.md,
    rewinds, eighth pass). So the compaction waits, at most ``QUIET_WAIT_S``
    (a peer that does not answer holds its pushes), until no own event waits
    for a flush, no flush is under way (HTTP batches are stamped at the flush,
    see orderentry.py) and every outbox is drained; it then holds the next
    flush off (``between_flushes``), lets the loop run a few rounds so that
    the pushes just taken are written, compacts, commits the rows before any
    order is stamped (``commit_held``), and lets the loop run a few rounds
    more so that the peers' pushes read meanwhile merge before the next
    flush stamps orders past them."""
    journal = node.journal
    with trio.move_on_after(QUIET_WAIT_S):
        while node.unsealed or journal.flushing or any(
                peer.outbox.statistics().current_buffer_used for peer in node.peers.values()):
            await trio.sleep(QUIET_POLL_S)
    async with journal.between_flushes():
        for _ in range(QUIET_ROUNDS):
            await trio.lowlevel.checkpoint()
        removed = node.compact()
        await journal.commit_held()
        for _ in range(QUIET_ROUNDS):
            await trio.lowlevel.checkpoint()
    return removed


# -- discovery -------------------------------------------------------------------
async def _discovery_loop(node: Node, client: PeerClient) -> None:
    last_announce = None
    while True:
        now = node.monotonic()
        if last_announce is None or now - last_announce >= node.config.announce_interval_s:
            await announce(node, client)
            last_announce = now
        node.forget_dead()
        node.forget_retired()
        await lookup(node, client)
        lonely = not any(p.last_seen is not None for p in node.peers.values())
        await trio.sleep(node.config.pull_interval_s if lonely
                         else min(node.config.announce_interval_s, 5.0))


def _registries(node: Node) -> list[str]:
    if node.config.registry_url:
        return [node.config.registry_url]
    return [node.url] + sorted(node.peers)


async def announce(node: Node, client: PeerClient) -> None:
    """Announce the node (and its PeerRPC port) to every registry in use."""
    entries = [(node.key, int(node.url.rsplit(":", 1)[1]))]
    if node.rpc_port:
        entries.append((node.rpc_key, node.rpc_port))
    async with trio.open_nursery() as nursery:
        for registry in _registries(node):
            for key, port in entries:
                if 0 < port < 65536:  # an out-of-range port crashes a real grape
                    nursery.start_soon(_grape_call, node, client, registry, "/announce",
                                       [key, port])


async def lookup(node: Node, client: PeerClient) -> None:
    found: list[str] = []

    async def one(registry: str) -> None:
        answer = await _grape_call(node, client, registry, "/lookup", node.key)
        if isinstance(answer, list):
            found.extend(a for a in answer[:100] if isinstance(a, str))

    async with trio.open_nursery() as nursery:
        for registry in _registries(node):
            nursery.start_soon(one, registry)
    own = node.url.split("://", 1)[1]
    for address in sorted(set(found)):
        if address != own:
            node.add_peer(address)


async def _grape_call(node: Node, client: PeerClient, registry: str, path: str,
                      data: object) -> object:
    """One grape API call; errors (string bodies, 500s, empty bodies) are logged, not raised."""
    try:
        response = await post(client, registry.rstrip("/") + path,
                              json.dumps({"data": data}).encode(),
                              {"content-type": "application/json"},
                              node.config.request_timeout_s, REGISTRY_ANSWER_LIMIT)
        if not response.content:
            raise CallFailed("empty body")
        answer = json.loads(response.content)
        if isinstance(answer, str):
            raise CallFailed(answer)
        return answer
    except (CallFailed, ValueError, RecursionError) as exc:
        # A configured registry (or grape) failing is worth a warning; the
        # embedded registries of dead peers fail all the time.
        log = logs.warning if registry == node.config.registry_url else logs.debug
        log("registry.call_failed", registry=registry, path=path,
            detail=(str(exc) or type(exc).__name__)[:200])
        return None
