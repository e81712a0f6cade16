"""The peer API: the CBOR routes other nodes call, served on the node's one port.

Theory of operation
-------------------
``/peer/push`` takes a delta; ``/peer/pull`` takes a causal context and
answers with the delta the caller lacks (a page of at most ``PAGE`` events;
events compacted from memory are read back from the store, so a peer always
gets events, never a snapshot); ``/peer/join`` admits a new replica and
answers with the state it needs. Every answer waits for the journal: a push
is answered once its events are durable here, and a pull or join answer
carries only events durable here. Peers name themselves in
``x-crdtbook-replica`` / ``x-crdtbook-url`` / ``x-crdtbook-book``; a peer of
another book is refused (409). A malformed delta or context is a 400 and
changes nothing. The client app (node/api/app.py) routes these paths here;
the gossip tasks (gossip.py) are the callers on the other side.
"""

from __future__ import annotations

from crdtbook.codec import CodecError, decode_blocks, decode_pull, encode_blocks
from crdtbook.context import CausalContext
from crdtbook.door import DoorError
from crdtbook.dot import check_replica
from crdtbook.keys import owns
from crdtbook.replica import ReplicaError

from .. import logs, service
from ..asgi import BadRequest, Request, Response
from ..service import Node
from ..store.journal import StoreFailed

CBOR = b"application/cbor"
PAGE_BYTES = 8 * 1024 * 1024  # a pull or join answer's block bytes, at most (one block more)
PEER_HEADERS = ("x-crdtbook-replica", "x-crdtbook-url", "x-crdtbook-book")


class PeerAPI:
    def __init__(self, node: Node) -> None:
        self.node = node

    def _peer_check(self, request: Request) -> None:
        book = request.headers.get("x-crdtbook-book")
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
        self._peer_check(request)
        try:
            blocks, claims = decode_blocks(request.body)
            added = self.node.accept(blocks, claims)
        except (CodecError, DoorError, ReplicaError) as exc:
            logs.warning("peer.bad_push", peer=request.headers.get("x-crdtbook-replica", "?"),
                         detail=str(exc)[:300])
            raise BadRequest(400, "bad_blocks", str(exc)) from None
        self._peer_seen(request)
        await self._durable()
        logs.debug("peer.push.received", added=added, bytes=len(request.body))
        response = Response(204, b"", headers=[(b"x-crdtbook-replica", self.node.id.encode())])
        response.headers.pop(0)  # no body, no content-type: pushes are small, headers add up
        return response

    async def peer_pull(self, request: Request) -> Response:
        self._peer_check(request)
        try:
            context, _tips, claims = decode_pull(request.body)
        except CodecError as exc:
            raise BadRequest(400, "bad_pull", str(exc)) from None
        node = self.node
        node.accept([], claims)  # a pull is a heartbeat too (signed claims only count)
        sender = request.headers.get("x-crdtbook-replica")
        # the header is not authenticated: a made-up sender must not grow the ack tables
        if sender and sender != node.id and node.replica.is_member(sender):
            node.replica.observe_ack(sender, context)  # and an acknowledgement
            node.note_held(sender, context.contiguous(node.id))
        self._peer_seen(request)
        return await self._state_for(context)

    async def _durable(self) -> None:
        try:
            await self.node.journal.sync()
        except StoreFailed as exc:
            raise BadRequest(503, "store_failed", str(exc)) from None

    async def _state_for(self, context: CausalContext) -> Response:
        """The signed blocks a peer with ``context`` lacks, a bounded page, from the store.

        Only what is durable here is in the store, so only that is sent. Every
        origin's blocks start right after what the peer holds of it, and the
        page is cut in position order (by each block's first clock), so a
        sponsor's block holding a join comes before the joined replica's own.
        """
        await self._durable()
        node = self.node
        cutoff = node.replica.membership.cutoff
        wanted = []
        for replica, tip in sorted(node.door.tips.items()):
            held = context.contiguous(replica)
            upto = min(tip.last, cutoff.get(replica, tip.last))  # past a cutoff: never taken
            if upto > held:
                wanted.append((replica, held, upto))
        blocks, more = await node.journal.read(node.store.relay_page, wanted,
                                               service.PAGE, PAGE_BYTES)
        headers = self._peer_headers()
        if more:
            headers.append((b"x-crdtbook-more", b"1"))
        return Response(200, encode_blocks(blocks, node.claims()), CBOR, headers)

    async def peer_join(self, request: Request) -> Response:
        self._peer_check(request)
        replica = request.headers.get("x-crdtbook-replica", "")
        try:
            check_replica(replica)
        except ValueError as exc:
            raise BadRequest(400, "bad_replica", str(exc)) from None
        if replica == self.node.id:
            raise BadRequest(409, "same_replica", "that is this node's own replica id")
        try:
            key = bytes.fromhex(request.headers.get("x-crdtbook-key", ""))
        except ValueError:
            key = b""
        if not owns(replica, key):
            raise BadRequest(403, "bad_key", "the public key does not match the replica id")
        try:
            self.node.ready_to_trade()  # only a member can admit others
            self.node.sponsor(replica, key)
        except ReplicaError as exc:
            raise BadRequest(409, "cannot_admit", str(exc)) from None
        self._peer_seen(request)
        return await self._state_for(CausalContext())
