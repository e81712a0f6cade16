"""Peer authentication: which member sent a request, which answered it.

Theory of operation
-------------------
Blocks and claims carry their origins' signatures (crdtbook/door.py), so
their content needs no trust in whoever relays them. Two things a node
learns from the *exchange itself* do: that a peer holds its events (an
acknowledgement, for ``ack=replicated``) and that a member has told it all
it holds (the end of a restarted node's wait, ``caught_up``). A header
naming a replica proves nothing, so those count only when signed:

* a request carries ``x-crdtbook-sig``: the sender's signature over the
  book and the hash of the request body;
* an answer carries ``x-crdtbook-sig``: the responder's signature over the
  hash of the request it answers and of its own body, so an old answer
  cannot be replayed for a new request.

A signature counts only from a member whose key this node holds. Every
signed message starts with its purpose, like the core's (feed.py).

Rules this module keeps
-----------------------
* Never raises on what a peer sent: a missing or bad signature is False.
* Signs nothing a peer chose alone: every signed message binds this node's
  own request or the peer's whole request body.
"""

from __future__ import annotations

import hashlib

from crdtbook.keys import verify

from ..service import Node

HEADER = "x-crdtbook-sig"


def request_message(book: str, body: bytes) -> bytes:
    return b"crdtbook-peer-request-v1\x00%s\x00%s" % (book.encode("utf-8", "replace"),
                                                       hashlib.sha256(body).digest())


def _answer_message(request: bytes, answer: bytes) -> bytes:
    return b"crdtbook-peer-answer-v1\x00%s%s" % (hashlib.sha256(request).digest(),
                                                 hashlib.sha256(answer).digest())


def sign_request(node: Node, body: bytes) -> str:
    return node.signer.sign(request_message(node.config.book, body)).hex()


def sign_answer(node: Node, request: bytes, answer: bytes) -> str:
    return node.signer.sign(_answer_message(request, answer)).hex()


def _checked(node: Node, replica: str | None, signature: str | None, message: bytes) -> bool:
    if not replica or not signature or replica == node.id:
        return False
    key = node.replica.membership.keys.get(replica)
    if key is None or not node.replica.is_member(replica):
        return False
    try:
        raw = bytes.fromhex(signature)
    except ValueError:
        return False
    return verify(key, message, raw)


def request_from(node: Node, replica: str | None, signature: str | None, body: bytes) -> bool:
    """Did member ``replica`` sign this request body?"""
    return _checked(node, replica, signature, request_message(node.config.book, body))


def answer_from(node: Node, replica: str | None, signature: str | None, request: bytes,
                answer: bytes) -> bool:
    """Did member ``replica`` sign this answer to our ``request``?"""
    return _checked(node, replica, signature, _answer_message(request, answer))


__all__ = ["HEADER", "answer_from", "request_from", "sign_answer", "sign_request"]
