"""The peer API: the CBOR routes other nodes call, served on the node's one port.

Theory of operation
-------------------
``/peer/push`` takes a delta (merged together with the other pushes ready
at the same moment, see Node.arrive; one past a gap first waits briefly for
the push before it, which it may have overtaken, see ``_after_overtaken``);
``/peer/pull`` takes a causal context and answers with the delta the caller
lacks (a page of at most ``PAGE`` events; events compacted from memory are
read back from the store, so a peer always gets events, never a snapshot);
``/peer/join`` admits a new replica whose signed request passes
admission.py, and answers with the state it needs;
``/peer/hello`` says who this node is (for ``--bootstrap-expect``).
A push may also come as one message of a peer's WebSocket (``/peer/stream``,
peerstream.py): it runs ``PeerAPI.push`` too, the same steps and answer.

Pulls are bounded three ways: an answer holds at most ``PAGE_BLOCKS``
blocks per origin and ``PULL_BYTES`` of block bodies in all (the caller asks
again at once for the rest, ``x-crdtbook-more``); pulls are rate-limited per
caller (``PULL_RATE`` a second for a member that signed its request, less
for anyone else, keyed by address); and an unsigned pull that holds nothing
(no context, no tips), which would ask for the whole history, is refused
(403 ``not_a_member``): a node that is not a member yet gets its first page
from ``/peer/join``. Every
answer waits for the journal: a push is answered once its events are
durable here, and a pull or join answer carries only events durable here. Peers name themselves in
``x-crdtbook-replica`` / ``x-crdtbook-url`` / ``x-crdtbook-book``; a peer of
another book is refused (409). A malformed delta or context is a 400 and
changes nothing. The client app (node/api/app.py) routes these paths here;
the gossip tasks (gossip.py) are the callers on the other side.
"""

from __future__ import annotations

import json

import trio

from crdtbook.codec import CodecError
from crdtbook.door import DoorError
from crdtbook.feedwire import decode_pull_message, encode_blocks
from crdtbook.replica import ReplicaError

from .. import logs
from ..asgi import BadRequest, Request, Response
from ..ratelimit import RateLimit
from ..service import Node, decoded
from ..store import jointoken
from ..store.datadir import phrase
from ..store.journal import StoreFailed
from ..store.sqlite import StoreError
from . import admission, peerauth, pushage

CBOR = b"application/cbor"
PAGE_BLOCKS = 2_000  # blocks per origin in a pull or join answer (and 8 MiB: feedindex.py)
PULL_BYTES = 8 * 1024 * 1024  # block bodies in one pull or join answer, all origins together
PULL_RATE, PULL_BURST = 20.0, 40.0  # pulls a second per member (a catching-up peer pulls fast)
STRANGER_RATE, STRANGER_BURST = 5.0, 10.0  # pulls a second per address of unsigned callers
OVERTAKEN_WAIT_S = 0.25  # a push past a gap waits this long at most for the one before
PEER_HEADERS = ("x-crdtbook-replica", "x-crdtbook-url", "x-crdtbook-book")


class PeerAPI:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.member_pulls = RateLimit(PULL_RATE, PULL_BURST)
        self.stranger_pulls = RateLimit(STRANGER_RATE, STRANGER_BURST)
        self._merged = trio.Event()  # set (and replaced) as each push is taken or refused

    async def _after_overtaken(self, message) -> None:
        """A push that overtook the one before it on the way (a peer has up to two in
        flight, gossip.py) waits for it, at most ``OVERTAKEN_WAIT_S``: merged first,
        its blocks would lie past a gap and be skipped, to come again by pull, older.
        (Its body is read before its handler runs, so "the push before is on its way"
        cannot be known here: any push past a gap waits, and one past a real gap, a
        push lost or dropped, is then skipped as before, the bound later.)"""
        gaps = self._gaps(message)
        tip = self.node.door.tip
        with trio.move_on_after(OVERTAKEN_WAIT_S):
            while gaps:
                replica, first = gaps[-1]
                if first <= tip(replica).last + 1:
                    gaps.pop()  # filled (a tip only grows): never looked up again
                else:
                    await self._merged.wait()

    def _gaps(self, message) -> list[tuple[str, int]]:
        """Each origin whose first block in ``message`` lies past a gap here, with that
        block's first seq. Found once: every push answered meanwhile wakes the wait,
        and a look-up per block at each wake (a genesis hash per stranger origin)
        made a large push waiting cost the event loop once per push answered."""
        door, seen, gaps = self.node.door, set(), []
        for block in message.blocks:
            if block.replica not in seen:
                seen.add(block.replica)
                if block.first > door.tip(block.replica).last + 1:
                    gaps.append((block.replica, block.first))
        return gaps

    def _peer_check(self, request: Request) -> None:
        self._peer_check_headers(request.headers)

    def _peer_check_headers(self, headers: dict[str, str]) -> None:
        book = headers.get("x-crdtbook-book")
        if book is not None and book != self.node.config.book:
            raise BadRequest(409, "wrong_book",
                             f"this node trades book {self.node.config.book!r}, not {book!r}")

    def _peer_seen(self, request: Request) -> None:
        self.node.seen(request.headers.get("x-crdtbook-url"),
                       request.headers.get("x-crdtbook-replica"))

    def _peer_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"x-crdtbook-replica", self.node.id.encode()),
                (b"x-crdtbook-book", self.node.config.book.encode("utf-8", "replace"))]

    async def peer_push(self, request: Request) -> Response:
        return await self.push(request.headers, request.body)

    async def push(self, headers: dict[str, str], body: bytes) -> Response:
        """Take one push (``body``, as ``/peer/push`` takes it, from the peer that
        ``headers`` name): its answer once durable here, or BadRequest. Over HTTP
        and over a peer stream (peerstream.py) alike."""
        self._peer_check_headers(headers)
        received = self.node.clock_ms()  # (before decoding: that is the merge's work)
        try:
            message = await decoded(body)
            oldest = pushage.oldest_ms(message.blocks)
            pushage.observe(self.node, "received", oldest, received)
            await self._after_overtaken(message)
            added = await self.node.arrive(message)  # merged with others ready with it
            pushage.observe(self.node, "merged", oldest)
        except (CodecError, DoorError, ReplicaError) as exc:
            logs.warning("peer.bad_push", peer=headers.get("x-crdtbook-replica", "?"),
                         detail=str(exc)[:300])
            raise BadRequest(400, "bad_blocks", str(exc)) from None
        finally:
            self._merged.set()
            self._merged = trio.Event()
        self.node.seen(headers.get("x-crdtbook-url"), headers.get("x-crdtbook-replica"))
        # A receipt says every block of the push is held here. One skipped (past a
        # gap: the sender's pushes in flight overtook each other on the way)
        # gets none, or the sender would count its events replicated (ack=replicated)
        # before the next pull brings them. Held now, durable after the sync below.
        receipt = headers.get("x-crdtbook-ack") == "1" and _holds(self.node, message.blocks)
        await self._durable()
        logs.debug("peer.push.received", added=added, bytes=len(body))
        response = Response(204, b"", headers=[(b"x-crdtbook-replica", self.node.id.encode())])
        response.headers.pop(0)  # no body, no content-type: pushes are small, headers add up
        if receipt:  # a signed receipt, for its acks
            response.headers.append((peerauth.HEADER.encode(),
                                     peerauth.sign_answer(self.node, body, b"").encode()))
        return response

    async def peer_pull(self, request: Request) -> Response:
        self._peer_check(request)
        try:
            pull = decode_pull_message(request.body)
        except CodecError as exc:
            raise BadRequest(400, "bad_pull", str(exc)) from None
        node = self.node
        sender = request.headers.get("x-crdtbook-replica")
        member = peerauth.request_from(node, sender, request.headers.get(peerauth.HEADER),
                                       request.body)
        if member:
            allowed = self.member_pulls.allow(sender, node.monotonic())
        else:
            allowed = self.stranger_pulls.allow(request.client_host, node.monotonic())
            if not pull.tips and not pull.context.replicas():
                raise BadRequest(403, "not_a_member", "a pull that holds nothing must be signed "
                                 "by a member; a new node is sent its first page when admitted")
        if not allowed:
            raise BadRequest(429, "too_many_pulls", "too many pulls; ask again shortly")
        node.accept([], pull.claims)  # a pull is a heartbeat too (signed claims only count)
        # an acknowledgement only from a member that signed this very request
        if member:
            node.replica.observe_ack(sender, pull.context)  # and an acknowledgement
            node.note_held(sender, pull.context.contiguous(node.id))
        self._peer_seen(request)
        response = await self._state_for(pull.tips, pull.skips, pull.convicted)
        response.headers.append((peerauth.HEADER.encode(), peerauth.sign_answer(
            node, request.body, response.body).encode()))
        return response

    async def _durable(self) -> None:
        try:
            await self.node.journal.sync()
        except StoreFailed as exc:
            raise BadRequest(503, "store_failed", str(exc)) from None

    async def _state_for(self, tips: dict, skips: dict | None = None,
                         convicted: dict | None = None) -> Response:
        """The signed blocks a peer holding ``tips`` lacks (a bounded page), what it
        asked about a suspected fork, and the proofs it lacks.

        Sent once durable here (a peer never holds what a crash here could
        lose). Each origin's blocks follow a boundary the peer named; an origin
        whose tip is no boundary here is named a suspect instead (see
        crdtbook/detection.py); ``x-crdtbook-more`` says a page was cut.
        """
        await self._durable()
        door = self.node.door
        answer = door.answer(tips, limit=PAGE_BLOCKS, max_bytes=PULL_BYTES)
        last: dict[str, int] = {}
        for block in answer.blocks:
            last[block.replica] = block.last
        more = answer.cut or any(door.tip(r).last > seq and door.tip(r).last
                                 <= self.node.replica.membership.cutoff.get(r, door.tip(r).last)
                                 for r, seq in last.items())
        headers = self._peer_headers()
        if more:
            headers.append((b"x-crdtbook-more", b"1"))
        body = encode_blocks(answer.blocks, self.node.claims(),
                             proofs=door.proofs_for(convicted or {}),
                             forks=door.fork_answer(skips or {}, limit=PAGE_BLOCKS),
                             suspects=answer.suspects)
        return Response(200, body, CBOR, headers)

    async def peer_join(self, request: Request) -> Response:
        """Admit the replica a signed join request names (admission.py checks it);
        a refused request changes nothing."""
        self._peer_check(request)
        node = self.node
        try:
            stored = node.join_token()
        except StoreError as exc:
            logs.error("join.token_unreadable", detail=str(exc)[:300])
            raise BadRequest(503, "join_token_unreadable", "this member cannot read its join "
                             "token; its operator must fix it (see its log)") from None
        if stored is None:
            raise BadRequest(503, "no_join_token", "this member keeps no join token and admits "
                             "nobody; its operator can make one with `crdtbook join-token "
                             "--rotate`")
        try:
            replica, key = admission.check(request.body, node.config.book, stored,
                                           node.clock_ms())
        except admission.Refused as exc:
            logs.warning("join.refused", error=exc.error, detail=exc.detail[:200],
                         replica=request.headers.get("x-crdtbook-replica", "?")[:64],
                         url=request.headers.get("x-crdtbook-url", "?")[:100])
            raise
        if replica == node.id:
            raise BadRequest(409, "same_replica", "that is this node's own replica id")
        how = node.replica.retirement(replica)
        if how is not None:
            raise BadRequest(409, "retired", f"replica {replica} {phrase(how)} and cannot join "
                             "again; a node joins again as a new replica (--rejoin-as-new)")
        try:
            node.ready_to_trade()  # only a member can admit others
            node.sponsor(replica, key)
        except ReplicaError as exc:
            raise BadRequest(409, "cannot_admit", str(exc)) from None
        node.seen(request.headers.get("x-crdtbook-url"), replica)
        response = await self._state_for({})
        response.headers.append((b"x-crdtbook-admission",
                                 b"open" if stored == jointoken.OPEN else b"token"))
        if stored != jointoken.OPEN:  # this member knows the token too: the joiner checks
            response.headers.append((b"x-crdtbook-admission-proof", admission.answer_proof(
                stored, request.body, response.body).encode()))
        return response

    async def peer_hello(self, request: Request) -> Response:
        """Who this node is, for nodes starting together (``--bootstrap-expect``):
        public facts only, and, for the asker's ``nonce``, an HMAC keyed by the join
        token that shows this node holds it (admission.hello_proof)."""
        node = self.node
        body = json.dumps({"replica": node.id, "book": node.config.book,
                           "joined": node.joined,
                           "bootstrap_expect": node.config.bootstrap_expect,
                           "group": node.bootstrap_group},
                          separators=(",", ":")).encode()
        headers = self._peer_headers()
        token = node.config.join_token
        if token is None:
            try:
                token = node.join_token()
            except StoreError:
                token = None
        nonce = request.query.get("nonce", "")
        if token not in (None, jointoken.OPEN) and nonce:
            headers.append((b"x-crdtbook-hello-proof",
                            admission.hello_proof(token, nonce, body).encode()))
        return Response(200, body, headers=headers)


def _holds(node, blocks) -> bool:
    """Every event of ``blocks`` is held here, with no gap before it."""
    context = node.replica.state.context
    return all(context.contiguous(block.replica) >= block.last for block in blocks)
