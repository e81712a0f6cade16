"""Grenache PeerRPC over HTTP: a Grenache client can trade on a node.

Theory of operation
-------------------
grenache-nodejs-http's transport (as measured against the real library):
the client POSTs ``[rid, key, payload]`` as JSON (method and path ignored);
with ``grc-compress: gzip`` the body is gzipped JSON and the reply must be
gzipped too, with no Content-Encoding header. The server answers HTTP 200
with ``[rid, null, result]`` or ``[rid, "ERR_...", null]``, echoing the rid
exactly (a wrong rid is a client timeout).

The node serves this on its own port and announces it under
``crdtbook:<book>:rpc``. A payload is ``{"action": ..., "token": ..., ...}``;
``token`` is what ``Authorization: Bearer`` carries over HTTP (an account's
token or the admin's, see auth.py): order and cancel need it, and so does
fills with an account; book, status and fills without one are public. A
missing or wrong token is ``ERR_UNAUTHORIZED``, another account's order or
fills ``ERR_FORBIDDEN``, a rate limit ``ERR_RATE_LIMITED`` (the detail says
how many seconds to wait), each changing nothing.

    order   the fields of POST /orders (type defaults to limit), and optionally
            "ack": "local"|"replicated"|"all" with "timeout": seconds
    cancel  {"id": "replica:seq"}
    book    {"depth": N} (optional)
    fills   {"after": cursor, "limit": N, "account": A} (all optional), as GET /fills
    status

An order or cancel is answered once durable here, as over HTTP.

Results are the JSON the HTTP API returns. Any bad request gets an
``ERR_...`` reply (with the reason after a colon), never a hang: even an
unparseable body is answered, with a null rid.
"""

from __future__ import annotations

import gzip
import json
import zlib

from crdtbook.replica import ReplicaError

from .. import logs
from ..asgi import MAX_DETAIL, BadRequest, Request, Response, _read_body, serve_asgi
from ..service import Node, NotReady
from ..store.journal import StoreFailed
from . import auth, history, views
from .acks import expecting_acks, parse_ack, wait_replicated
from .requests import parse_order, parse_order_id, unique_keys

MAX_BODY = 1024 * 1024  # a request body as sent, and as inflated when gzipped
MAX_RID = 256  # characters of a request id (echoed in every reply)


def _error_code(exc: Exception) -> str:
    """``ERR_CODE:detail`` for what an action raised."""
    if isinstance(exc, StoreFailed):
        return f"ERR_STORE_FAILED:{str(exc)[:MAX_DETAIL]}"
    if isinstance(exc, BadRequest | NotReady):
        return f"ERR_{exc.error.upper()}:{exc.detail}"
    if isinstance(exc, ReplicaError):
        return f"ERR_REFUSED:{str(exc)[:MAX_DETAIL]}"
    logs.error("rpc.bug", error=repr(exc)[:300])  # a bug in the node, never the caller's input
    return "ERR_INTERNAL:the node hit a bug; see its log"


def inflate(body: bytes, limit: int) -> bytes:
    """Gunzip ``body``, refusing (BadRequest 413) once more than ``limit`` bytes come out:
    the inflate stops there, so a small bomb never grows past the limit in memory."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise BadRequest(413, "too_large", f"the gzipped body inflates past {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ValueError("not one complete gzip member")
    return out


class PeerRPCApp:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope, receive, send) -> None:
        await serve_asgi(scope, receive, send, self.respond)

    async def respond(self, scope, receive) -> Response:
        gzipped = Request(scope, b"").headers.get("grc-compress", "").lower() == "gzip"
        try:
            body = await _read_body(receive, MAX_BODY)
        except BadRequest as exc:
            body, reply = None, [None, f"ERR_REQUEST:{exc.detail}", None]
        if body is not None:
            reply = await self.answer(body, gzipped)
        data = json.dumps(reply, separators=(",", ":")).encode()
        return Response(200, gzip.compress(data) if gzipped else data)

    async def answer(self, body: bytes, gzipped: bool) -> list:
        try:
            if gzipped:
                body = inflate(body, MAX_BODY)
            message = json.loads(body, object_pairs_hook=unique_keys)
        except BadRequest as exc:
            return [None, f"ERR_REQUEST:{exc.detail}", None]
        except (ValueError, OSError, EOFError, RecursionError, zlib.error):
            return [None, "ERR_REQUEST:body is not [rid, key, payload] JSON", None]
        if not isinstance(message, list) or len(message) != 3 or not isinstance(message[0], str):
            return [None, "ERR_REQUEST:body is not [rid, key, payload] JSON", None]
        if len(message[0]) > MAX_RID:
            return [None, f"ERR_REQUEST:rid longer than {MAX_RID} characters", None]
        rid, key, payload = message
        if key != self.node.rpc_key:
            return [rid, f"ERR_SERVICE_NOT_FOUND:this node serves {self.node.rpc_key}", None]
        try:
            return [rid, None, await self.act(payload)]
        except Exception as exc:  # every reply is [rid, ...], a bug's too
            code = _error_code(exc)
            if isinstance(payload, dict) and payload.get("action") in ("order", "cancel"):
                self.node.metrics.refused(payload["action"], code[4:].split(":", 1)[0])
            return [rid, code, None]

    async def act(self, payload: object) -> object:
        if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
            raise BadRequest(400, "bad_action", 'payload must be {"action": ...}')
        fields = {k: v for k, v in payload.items() if k not in ("action", "token")}
        action = payload["action"]
        replica = self.node.replica

        def who() -> auth.Principal:
            return auth.principal(self.node, payload.get("token"))

        if action == "order":
            principal = who()
            ack, timeout = parse_ack({k: fields.pop(k) for k in ("ack", "timeout")
                                      if k in fields})
            order = auth.entitled(self.node, principal, [parse_order(fields, "")])[0]
            with expecting_acks(self.node, ack):
                placed = self.node.place_many([order])[0]
                await self.node.journal.sync()
                answer = {"order": views.order_json(placed.order,
                                                    replica.order_final(placed.order)),
                          "fills": [views.fill_json(f, False, placed.order.clock)
                                    for f in placed.fills]}
                if ack != "local":
                    answer["replicated"] = await wait_replicated(
                        self.node, placed.order.dot.seq, ack, timeout)
            return answer
        if action == "cancel":
            if set(fields) != {"id"} or not isinstance(fields["id"], str):
                raise BadRequest(400, "bad_cancel", 'cancel takes {"id": "replica:seq"}')
            principal = who()
            cancelled = await history.cancel(self.node, parse_order_id(fields["id"]), principal)
            return {"cancel": views.cancel_json(cancelled.cancel)}
        if action == "book":
            depth = fields.get("depth")
            bad_depth = depth is not None and (
                isinstance(depth, bool) or not isinstance(depth, int) or not 0 < depth <= 10_000)
            if set(fields) - {"depth"} or bad_depth:
                raise BadRequest(400, "bad_book", 'book takes {"depth": 1..10000}')
            return views.book_json(replica, depth)
        if action == "fills":
            if set(fields) - {"after", "limit", "account"} \
                    or any(not isinstance(v, str | int) or isinstance(v, bool)
                           for v in fields.values()):
                raise BadRequest(400, "bad_fills", 'fills takes {"after", "limit", "account"}')
            query = {k: str(v) for k, v in fields.items()}
            if "account" in query:
                auth.may_read(who(), history.parse_account(query))
            page, cursor = await history.fills_page(
                self.node, history.parse_fill_cursor(query), history.parse_limit(query),
                history.parse_account(query))
            return {"fills": [views.stored_fill_json(f, final) for f, final in page],
                    "next": cursor}
        if action == "status":
            return self.node.status()
        raise BadRequest(400, "bad_action",
                         f"unknown action {action[:40]!r}; use order, cancel, book, fills, status")
