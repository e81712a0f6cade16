"""The peer API: the CBOR routes other nodes call, served on the node's one port.

Theory of operation
-------------------
``/peer/push`` takes a delta; ``/peer/pull`` takes a causal context and
answers with the delta the caller lacks (a page of at most ``PAGE`` events,
or a snapshot if some of it was compacted away here); ``/peer/join`` admits
a new replica and answers with the state it needs. Peers name themselves in
``x-crdtbook-replica`` / ``x-crdtbook-url`` / ``x-crdtbook-book``; a peer of
another book is refused (409). A malformed delta or context is a 400 and
changes nothing. The client app (node/api/app.py) routes these paths here;
the gossip tasks (gossip.py) are the callers on the other side.
"""

from __future__ import annotations

from crdtbook.codec import (
    CodecError,
    decode_context_claims,
    decode_delta_claims,
    encode_delta,
    encode_snapshot,
)
from crdtbook.context import CausalContext
from crdtbook.dot import check_replica
from crdtbook.replica import ReplicaError

from .. import logs, service
from ..asgi import BadRequest, Request, Response
from ..service import Node

CBOR = b"application/cbor"
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

    def peer_push(self, request: Request) -> Response:
        self._peer_check(request)
        try:
            delta, claims = decode_delta_claims(request.body)
            added = self.node.accept(delta, claims)
        except (CodecError, ReplicaError) as exc:
            logs.warning("peer.bad_push", peer=request.headers.get("x-crdtbook-replica", "?"),
                         detail=str(exc)[:300])
            raise BadRequest(400, "bad_delta", str(exc)) from None
        self._peer_seen(request)
        logs.debug("peer.push.received", added=added, bytes=len(request.body))
        response = Response(204, b"", headers=[(b"x-crdtbook-replica", self.node.id.encode())])
        response.headers.pop(0)  # no body, no content-type: pushes are small, headers add up
        return response

    def peer_pull(self, request: Request) -> Response:
        self._peer_check(request)
        try:
            context, claims = decode_context_claims(request.body)
        except CodecError as exc:
            raise BadRequest(400, "bad_context", str(exc)) from None
        replica = self.node.replica
        replica.observe_claims(claims)  # a pull is a heartbeat too
        sender = request.headers.get("x-crdtbook-replica")
        if sender:
            replica.observe_ack(sender, context)  # and an acknowledgement
        self._peer_seen(request)
        return self._state_for(context)

    def _state_for(self, context) -> Response:
        """What a peer with ``context`` lacks: a page of events, or a snapshot if
        some of it was compacted away here."""
        replica = self.node.replica
        missing = replica.missing(context, limit=service.PAGE)
        if replica.needs_snapshot(missing):
            body = encode_snapshot(replica.snapshot_state(), self.node.claims())
            return Response(200, body, CBOR,
                            self._peer_headers() + [(b"x-crdtbook-kind", b"snapshot")])
        body = encode_delta(missing, self.node.claims())
        return Response(200, body, CBOR, self._peer_headers())

    def peer_join(self, request: Request) -> Response:
        self._peer_check(request)
        replica = request.headers.get("x-crdtbook-replica", "")
        try:
            check_replica(replica)
        except ValueError as exc:
            raise BadRequest(400, "bad_replica", str(exc)) from None
        if replica == self.node.id:
            raise BadRequest(409, "same_replica", "that is this node's own replica id")
        try:
            self.node.ready_to_trade()  # only a member can admit others
            self.node.sponsor(replica)
        except ReplicaError as exc:
            raise BadRequest(409, "cannot_admit", str(exc)) from None
        self._peer_seen(request)
        return self._state_for(CausalContext())
