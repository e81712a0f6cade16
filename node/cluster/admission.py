"""Admission: the signed join request a new node sends, and the sponsor's checks.

Theory of operation
-------------------
A node asks a member to admit it with ``POST /peer/join`` and a small CBOR
map::

    {"v": 1, "kind": "join", "book": BOOK, "replica": ID, "key": PUBLIC,
     "proof": PROOF or null, "time": UNIX_MS, "sig": SIG}

The join token itself never leaves the joiner: ``PROOF`` is an HMAC-SHA256,
keyed by the token, of ``[book, replica, key, time]`` (null without a
token), so whoever the joiner asks (a fake peer found in a registry, say)
learns nothing it could use. ``SIG`` is the joiner's Ed25519 signature
(crdtbook/keys.py) over ``b"crdtbook-join-v1\\x00"`` followed by the
canonical CBOR of ``[book, replica, key, proof, time]``: domain-separated,
so no other signature of the replica can pass for it.

The other way round, a sponsor proves it knows the token too: its answer
carries ``x-crdtbook-admission-proof``, an HMAC keyed by the token of the
request and the answer (``answer_proof``). A joiner that holds a token takes
no answer without it, so a fake peer cannot capture it into a cluster of its
own. The same holds for ``--bootstrap-expect`` hellos (``hello_proof``,
bound to the asker's nonce): only peers that know the token are counted.

The sponsor checks, in this order, before anything changes (``check``;
each failure is a ``Refused`` with status, code and a detail for the
joiner's operator):

1. the map is well formed (400 ``bad_join``) and of this book (409 ``wrong_book``);
2. ``replica`` is the id of ``key`` (403 ``bad_key``): nobody joins under an
   id whose secret key they do not hold;
3. ``sig`` is valid for ``key`` (403 ``bad_signature``);
4. ``proof`` is the HMAC of the member's join token (403 ``bad_join_token``);
5. ``time`` is within ``MAX_SKEW_MS`` of the sponsor's clock (403
   ``stale_join``): a request seen on the wire cannot be replayed later.

The caller (peerapi.py) then refuses a retired id (409) and only then
sponsors. The body is at most ``BODY_LIMIT`` bytes (413 beyond: app.py).
"""

from __future__ import annotations

import hashlib
import hmac

import cbor2

from crdtbook import codec, keys
from crdtbook.dot import check_replica

from ..asgi import BadRequest
from ..store import jointoken

VERSION = 1
DOMAIN = b"crdtbook-join-v1\x00"
MAX_SKEW_MS = 5 * 60 * 1000
BODY_LIMIT = 4096  # a request is ~250 bytes; anything much larger is not one
FIELDS = frozenset({"v", "kind", "book", "replica", "key", "proof", "time", "sig"})
TOKEN_HINT = "ask a member's operator for `crdtbook join-token`"


class Refused(BadRequest):
    """A join request refused: status, code, and a detail for the joiner's operator."""


def _hmac(token: str, purpose: bytes, data: bytes) -> bytes:
    return hmac.new(token.encode(), purpose + data, hashlib.sha256).digest()


def token_proof(token: str | None, book: str, replica: str, key: bytes,
                time_ms: int) -> bytes | None:
    """What a join request carries instead of its token (None: no token)."""
    if token is None:
        return None
    return _hmac(token, b"crdtbook-join-proof-v1\x00",
                 cbor2.dumps([book, replica, key, time_ms], canonical=True))


def answer_proof(token: str, request_body: bytes, answer_body: bytes) -> str:
    """A sponsor's proof, in its answer, that it knows the token too (hex)."""
    return _hmac(token, b"crdtbook-join-answer-v1\x00",
                 hashlib.sha256(request_body).digest()
                 + hashlib.sha256(answer_body).digest()).hex()


def hello_proof(token: str, nonce: str, body: bytes) -> str:
    """A bootstrapping node's proof, in its hello, that it holds the token (hex)."""
    return _hmac(token, b"crdtbook-hello-v1\x00",
                 nonce.encode()[:64] + hashlib.sha256(body).digest()).hex()


def proven(expected: str, presented: object) -> bool:
    return isinstance(presented, str) and hmac.compare_digest(expected, presented)


def message(book: str, replica: str, key: bytes, proof: bytes | None, time_ms: int) -> bytes:
    """What a join request's signature covers."""
    return DOMAIN + cbor2.dumps([book, replica, key, proof, time_ms], canonical=True)


def request(signer: keys.Signer, book: str, token: str | None, time_ms: int) -> bytes:
    """The body of a join request for the replica of ``signer``."""
    proof = token_proof(token, book, signer.id, signer.public, time_ms)
    sig = signer.sign(message(book, signer.id, signer.public, proof, time_ms))
    return cbor2.dumps({"v": VERSION, "kind": "join", "book": book, "replica": signer.id,
                        "key": signer.public, "proof": proof, "time": time_ms, "sig": sig},
                       canonical=True)


def check(body: bytes, book: str, stored_token: str, now_ms: int) -> tuple[str, bytes]:
    """The (replica, public key) a valid join request asks to admit; Refused otherwise.
    Changes nothing."""
    try:
        fields = codec.loads(body, "join request")  # scanned first: no tags, bounded
    except codec.CodecError as exc:
        raise Refused(400, "bad_join", str(exc)[:300]) from None
    if not isinstance(fields, dict) or set(fields) != FIELDS:
        raise Refused(400, "bad_join", "a join request is a CBOR map of exactly "
                      + ", ".join(sorted(FIELDS)))
    if fields["v"] != VERSION or fields["kind"] != "join":
        raise Refused(400, "bad_join", f"not a join request of version {VERSION}")
    replica, key, proof, time_ms = (fields["replica"], fields["key"], fields["proof"],
                                    fields["time"])
    if not isinstance(fields["book"], str) or not isinstance(replica, str) \
            or not isinstance(key, bytes) or not (proof is None or isinstance(proof, bytes)) \
            or type(time_ms) is not int or not isinstance(fields["sig"], bytes):
        raise Refused(400, "bad_join", "a join request field has the wrong type")
    if fields["book"] != book:
        raise Refused(409, "wrong_book", f"this node trades book {book!r}, not "
                      f"{fields['book'][:64]!r}")
    try:
        check_replica(replica)
    except ValueError as exc:
        raise Refused(400, "bad_replica", str(exc)) from None
    if not keys.owns(replica, key):
        raise Refused(403, "bad_key", f"{replica} is not the id of the key in the request "
                      "(an id is derived from its public key)")
    if not keys.verify(key, message(book, replica, key, proof, time_ms), fields["sig"]):
        raise Refused(403, "bad_signature", "the join request's signature is not valid for "
                      "its key")
    if stored_token != jointoken.OPEN and (
            not isinstance(proof, bytes) or not hmac.compare_digest(
                proof, token_proof(stored_token, book, replica, key, time_ms))):
        raise Refused(403, "bad_join_token", f"wrong or missing join token; {TOKEN_HINT}")
    if abs(time_ms - now_ms) > MAX_SKEW_MS:
        skew = (time_ms - now_ms) / 1000
        raise Refused(403, "stale_join", f"the join request is stamped {skew:+.0f}s "
                      f"from this member's clock (at most +-{MAX_SKEW_MS // 60_000} minutes): "
                      "check both machines' clocks")
    return replica, key
