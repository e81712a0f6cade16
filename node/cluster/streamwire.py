"""The messages of a peer stream (``/peer/stream``): a push and its answer, in bytes.

Theory of operation
-------------------
A peer stream is one WebSocket between two nodes that carries the pushes one
of them would otherwise POST to ``/peer/push`` (peerstream.py receives them,
pushstream.py sends them). Each binary message is one push or one answer;
the WebSocket frames them, so these are only what a push and an answer say
besides their bodies, in fixed-size heads (no parsing of anything a peer
sends beyond ``struct`` and a length check):

* a push: ``id`` (8 bytes, big-endian), ``flags`` (1 byte; bit 0: a signed
  receipt is asked, as ``x-crdtbook-ack: 1`` asks over HTTP; other bits must
  be 0), then the body ``/peer/push`` takes, as it is;
* an answer: the push's ``id``, the HTTP status ``/peer/push`` would have
  given (2 bytes: 204, 400, 503, ...), the length of the receipt (2 bytes,
  0 for none), the receipt (``peerauth.sign_answer``'s ASCII), then the
  answer's body (the JSON error of a refusal; empty for a 204).

Anything else (short, unknown flags, a receipt longer than the message) is
``ValueError``: the receiver closes the connection (1007), the sender drops
it and fails the pushes it had in flight.
"""

from __future__ import annotations

import struct

PUSH_HEAD = struct.Struct(">QB")
ANSWER_HEAD = struct.Struct(">QHH")
RECEIPT_ASKED = 1
MAX_ID = 2**64 - 1


def push(ident: int, receipt: bool, body: bytes) -> bytes:
    return PUSH_HEAD.pack(ident, RECEIPT_ASKED if receipt else 0) + body


def read_push(data: bytes) -> tuple[int, bool, bytes]:
    """(id, receipt asked, body) of a push message."""
    if len(data) < PUSH_HEAD.size:
        raise ValueError(f"a push message of {len(data)} bytes (its head alone is "
                         f"{PUSH_HEAD.size})")
    ident, flags = PUSH_HEAD.unpack_from(data)
    if flags & ~RECEIPT_ASKED:
        raise ValueError(f"unknown flags {flags:#x} in a push message")
    return ident, bool(flags), data[PUSH_HEAD.size:]


def answer(ident: int, status: int, receipt: bytes, body: bytes) -> bytes:
    return ANSWER_HEAD.pack(ident, status, len(receipt)) + receipt + body


def read_answer(data: bytes) -> tuple[int, int, bytes, bytes]:
    """(id, status, receipt, body) of an answer message."""
    if len(data) < ANSWER_HEAD.size:
        raise ValueError(f"an answer message of {len(data)} bytes")
    ident, status, length = ANSWER_HEAD.unpack_from(data)
    end = ANSWER_HEAD.size + length
    if end > len(data) or not 100 <= status <= 599:
        raise ValueError("a malformed answer message")
    return ident, status, data[ANSWER_HEAD.size:end], data[end:]
