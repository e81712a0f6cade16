"""The node's HTTP surface as an ASGI app (served by hypercorn's trio worker).

Theory of operation
-------------------
Three families of routes share one port, and this app routes them all:

* the client API, JSON (``/orders``, ``/book``, ``/fills``, ``/events``,
  ``/status``, ``/context``, ``/evict``), answered here, with ``/metrics``
  (Prometheus text, node/metrics.py) and ``/openapi.json`` (the API's
  description, openapi.py);
* the peer API, CBOR (``/peer/push``, ``/peer/pull``, ``/peer/join``),
  answered by ``PeerAPI`` (node/cluster/peerapi.py), and the peers'
  WebSocket of pushes (``/peer/stream``, node/cluster/peerstream.py; any
  other WebSocket path goes to the client streams, node/api/websocket.py);
* the Grenache-grape registry (``/announce``, ``/lookup``), answered by
  node/cluster/registry.py from the node's embedded table;
* the web page (``/`` and ``/static/<file>``), public static files answered
  by node/web/pages.py.

Operator actions (``/evict``, ``/leave``: they end a membership for ever;
``/accounts``: who may trade here) need ``Authorization: Bearer <admin
token>`` (node/store/admintoken.py). Order entry and private history
(``/orders`` and ``/orders/ID``, ``/fills?account=``) need an account's
token or the admin's (node/api/auth.py). Both checks come right after
routing, before the body is read and before any other work (an evict's
pull from every peer included): a missing or wrong token is a 401 that
changes nothing. Whose orders a token may place, cancel or read (403) and
the rate limit (429) are checked once the request is parsed, before the
node changes anything. Market data (``/book``, ``/fills``, ``/events``,
``/status``, ``/context``) is public, and so are ``/metrics`` and
``/openapi.json``.

Rules this module keeps: a request body is read up to a limit (413 beyond);
every client or peer mistake is a 4xx with ``{"error", "detail"}`` and changes
nothing; a 500 means a bug in the node (logged), never bad input.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable

from crdtbook.dot import check_replica
from crdtbook.replica import ReplicaError

from .. import logs, metrics
from ..asgi import PEER_STREAM, BadRequest, Request, Response, _read_body, dumps, serve_asgi
from ..cluster import admission, gossip, peerstream, registry
from ..cluster.peerapi import PeerAPI
from ..service import Node, account_json
from ..store import admintoken
from ..store.journal import StoreFailed
from ..web.pages import STATIC_PREFIX, Pages
from . import auth, history, openapi, orderentry, views, websocket
from .acks import expecting_acks, parse_ack, wait_replicated
from .requests import parse_depth, parse_json, parse_order_id, parse_orders


def json_response(status: int, data: object) -> Response:
    return Response(status, dumps(data))


def error_response(status: int, error: str, detail: str,
                   headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    response = json_response(status, {"error": error, "detail": detail})
    response.headers += headers or []
    return response


ADMIN_ROUTES = frozenset({"/evict", "/leave"})  # routes that need the admin token
ACCOUNT_ROUTES = frozenset({"/orders"})  # and /orders/ID: an account's token (or the admin's)


def order_entry(method: str, path: str) -> str | None:
    """"order" or "cancel" if the request enters one (for the refusal counters)."""
    if method == "POST" and path == "/orders":
        return "order"
    if method == "DELETE" and path.startswith("/orders/") and path.count("/") == 2:
        return "cancel"
    return None


def error_of(response: Response) -> str | None:
    """The ``error`` code of an error answer's JSON body."""
    try:
        return json.loads(response.body).get("error")
    except (ValueError, AttributeError):
        return None


def admin_denied(headers: dict[str, str], expected: bytes) -> str | None:
    """Why the request may not act as the node's operator, or None if it may."""
    given = headers.get("authorization")
    if given is None:
        return ("this route needs the node's admin token: send 'Authorization: Bearer "
                "<token>' (the token is in the node's data directory, file admin-token)")
    scheme, _, token = given.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "expected 'Authorization: Bearer <admin token>'"
    if not admintoken.matches(expected, token.strip()):
        return "wrong admin token"  # never echo what was sent: it may be a near-miss secret
    return None


class App:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.peer = PeerAPI(node)
        self.at_flush = orderentry.AtFlush(node)
        self.pages = Pages()
        Handler = Callable[[Request], Response]
        self.exact: dict[str, dict[str, Handler]] = {
            "/": {"GET": self.pages.index},
            "/orders": {"POST": self.post_orders, "GET": self.get_orders},
            "/book": {"GET": self.get_book},
            "/fills": {"GET": self.get_fills},
            "/events": {"GET": self.get_events},
            "/status": {"GET": self.get_status},
            "/context": {"GET": self.get_context},
            "/peer/push": {"POST": self.peer.peer_push},
            "/peer/pull": {"POST": self.peer.peer_pull},
            "/peer/join": {"POST": self.peer.peer_join},
            "/peer/hello": {"GET": self.peer.peer_hello},
            "/evict": {"POST": self.post_evict},
            "/leave": {"POST": self.post_leave},
            "/accounts": {"POST": self.post_account, "GET": self.get_accounts},
            "/metrics": {"GET": self.get_metrics},
            "/openapi.json": {"GET": self.get_openapi},
        }
        self.order_routes: dict[str, Handler] = {"GET": self.get_order, "DELETE": self.delete_order}
        self.account_routes: dict[str, Handler] = {"DELETE": self.delete_account}

    # -- ASGI --------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] == "websocket":
            if scope.get("path") == PEER_STREAM:
                await peerstream.serve(self.peer, scope, receive, send)
                return
            await websocket.serve(self.node, scope, receive, send)
            return
        await serve_asgi(scope, receive, send, self.respond)

    async def respond(self, scope: dict, receive) -> Response:
        response = await self._respond(scope, receive)
        path = scope["path"]
        if path.startswith("/peer/"):
            self.node.metrics.served(scope, response)
        elif response.status >= 400 and path.startswith("/orders"):
            entry = order_entry(scope["method"], path)
            if entry is not None:
                self.node.metrics.refused(entry, error_of(response))
        return response

    async def _respond(self, scope: dict, receive) -> Response:
        path = scope["path"]
        try:
            if path in ("/announce", "/lookup"):  # grape ignores the method
                body = await _read_body(receive, 64 * 1024)
                request = Request(scope, body)
                answer = registry.handle(self.node.registry, path, body, request.client_host,
                                         self.node.monotonic())
                return Response(200, answer)
            handler = self._route(scope["method"], path)
            request = Request(scope)  # its headers decoded once; its body read below
            headers = request.headers
            if path in ADMIN_ROUTES or path.startswith("/accounts"):
                denied = admin_denied(headers, self.node.admin_digest)
                if denied is not None:
                    raise auth.unauthorized(denied)
                request.who = auth.ANYONE
            elif path in ACCOUNT_ROUTES or path.startswith("/orders/") \
                    or (path == "/fills" and "account" in request.query):
                request.who = auth.principal(self.node, auth.bearer(headers))
            # else public: who stays None
            limit = (admission.BODY_LIMIT if path == "/peer/join"
                     else gossip.PUSH_BODY_LIMIT if path.startswith("/peer/")
                     else self.node.config.client_body_limit)
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:  # refused before reading it
                raise BadRequest(413, "too_large", f"request body exceeds {limit} bytes")
            request.body = await _read_body(receive, limit)
            response = handler(request)
            if inspect.isawaitable(response):
                response = await response
            return response
        except Exception as exc:
            refused = orderentry.failure(exc)
            if refused is None:  # a bug in the node, never the caller's input
                logs.error("http.bug", path=path, error=repr(exc)[:300])
                return error_response(500, "internal", "the node hit a bug; see its log")
            if isinstance(exc, auth.Denied):
                logs.info("http.denied", path=path, status=exc.status, error=exc.error)
            elif isinstance(exc, BadRequest):
                logs.debug("http.rejected", path=path, status=exc.status, detail=exc.detail)
            return Response(refused.status, dumps(
                {"error": refused.error, "detail": refused.detail}), headers=refused.headers)

    def _route(self, method: str, path: str) -> Callable[[Request], Response]:
        routes = self.exact.get(path)
        if routes is None and path.startswith("/orders/") and path.count("/") == 2:
            routes = self.order_routes
        if routes is None and path.startswith("/accounts/") and path.count("/") == 2:
            routes = self.account_routes
        if routes is None and path.startswith(STATIC_PREFIX):
            routes = {"GET": self.pages.static}
        if routes is None:
            raise BadRequest(404, "not_found", f"no route {path}")
        handler = routes.get(method)
        if handler is None:
            allowed = ", ".join(sorted(routes))
            raise BadRequest(405, "method_not_allowed",
                             f"{method} not allowed on {path}; use {allowed}",
                             headers=[(b"allow", allowed.encode())])  # RFC 9110
        return handler

    # -- client API -------------------------------------------------------
    async def post_orders(self, request: Request) -> Response:
        """Place one order or a batch; 201 once durable here (and, with ``ack=replicated``
        or ``ack=all``, once peers hold it too; 202 if they did not in time). An
        ephemeral store promises nothing, so ``ack=local`` answers it at once: the
        journal commits what gathered a moment later (node/store/journal.py)."""
        ack, timeout = parse_ack(request.query)
        orders, batch = parse_orders(request.body)
        orders = auth.entitled(self.node, request.who, orders)
        node = self.node
        journal = node.journal
        if journal.failed:  # as sync would say: nothing more is acknowledged
            raise StoreFailed(journal.failed)
        with expecting_acks(node, ack):
            if not node.store.ephemeral:
                # stamped when the flush that commits them starts (orderentry.AtFlush)
                placed = await self.at_flush.place(orders)
            else:  # an ephemeral store promises nothing: ack=local waits for nothing
                placed = node.place_many(orders)
                if ack != "local":
                    await journal.sync()
            if ack == "local":
                status, extra = 201, None
            else:
                replicated = await wait_replicated(node, placed[-1].order.dot.seq, ack,
                                                   timeout)
                status, extra = (201 if replicated else 202), {"replicated": replicated}
        replica = self.node.replica
        results = orderentry.placed_answers(replica, placed, extra)
        return json_response(status, results if batch else results[0])

    async def get_order(self, request: Request) -> Response:
        dot = parse_order_id(request.path.split("/", 2)[2])
        found = await history.order(self.node, dot.replica, dot.seq)
        if found is None:
            raise BadRequest(404, "not_found", f"no order {dot}")
        view, final, _ = found
        is_final = final is not None or self.node.replica.order_final(view)
        return json_response(200, views.order_json(view, is_final))

    async def get_orders(self, request: Request) -> Response:
        query = request.query
        after, limit = history.parse_position(query), history.parse_limit(query)
        account, status = history.parse_account(query), history.parse_status(query)
        auth.may_read(request.who, account)
        page, cursor = await history.orders_page(self.node, after, limit, account, status)
        replica = self.node.replica
        return json_response(200, {
            "orders": [views.order_json(view, final is not None or replica.order_final(view))
                       for _, view, final in page],
            "next": cursor,
        })

    async def delete_order(self, request: Request) -> Response:
        dot = parse_order_id(request.path.split("/", 2)[2])
        result = await history.cancel(self.node, dot, request.who)
        return json_response(200, {"cancel": views.cancel_json(result.cancel)})

    def get_book(self, request: Request) -> Response:
        return json_response(200, views.book_json(self.node.replica, parse_depth(request.query)))

    async def get_fills(self, request: Request) -> Response:
        """Every fill ever produced, oldest first: final ones, then the provisional window."""
        query = request.query
        after, limit = history.parse_fill_cursor(query), history.parse_limit(query)
        account = history.parse_account(query)
        if account is not None:  # an account's own fills are private
            auth.may_read(request.who, account)
        page, cursor = await history.fills_page(self.node, after, limit, account)
        return json_response(200, {
            "fills": [views.stored_fill_json(fill, final) for fill, final in page],
            "next": cursor,
            "final_clock": self.node.replica.frontier(),
        })

    async def get_events(self, request: Request) -> Response:
        query = request.query
        after, limit = history.parse_position(query), history.parse_limit(query)
        events, cursor = await history.events_page(self.node, after, limit)
        return json_response(200, {"events": [views.event_json(e) for e in events],
                                   "next": cursor})

    def get_status(self, request: Request) -> Response:
        return json_response(200, self.node.status())

    def get_context(self, request: Request) -> Response:
        return json_response(200, {"replica": self.node.id, "context": self.node.context()})

    def get_metrics(self, request: Request) -> Response:
        return Response(200, self.node.metrics.render(), metrics.CONTENT_TYPE.encode())

    def get_openapi(self, request: Request) -> Response:
        return Response(200, openapi.document_json())

    # -- accounts (admin) -------------------------------------------------
    async def post_account(self, request: Request) -> Response:
        """Make an account; its token is in this answer and nowhere else."""
        data = parse_json(request.body)
        if not isinstance(data, dict) or set(data) != {"account"}:
            raise BadRequest(400, "bad_request", 'expected {"account": "<name>"}')
        try:
            view, token = self.node.add_account(data["account"])
        except ValueError as exc:
            status = 409 if "exists" in str(exc) or "revoked" in str(exc) else 400
            raise BadRequest(status, "bad_account", str(exc)) from None
        await self.node.journal.sync()
        return json_response(201, {**view, "token": token})

    def get_accounts(self, request: Request) -> Response:
        rows = sorted(self.node.accounts.by_name.values(), key=lambda r: r.name)
        return json_response(200, {"accounts": [account_json(r) for r in rows]})

    async def delete_account(self, request: Request) -> Response:
        name = request.path.split("/", 2)[2]  # ASGI paths come percent-decoded
        try:
            view = self.node.revoke_account(name)
        except KeyError:
            raise BadRequest(404, "not_found", f"no live account {name[:64]!r}") from None
        await self.node.journal.sync()
        return json_response(200, view)

    async def post_evict(self, request: Request) -> Response:
        """Evict a vanished replica: first pull everything from every peer, so the
        last seq named is the highest any reachable node holds; refuse (409)
        while a peer is unreachable, unless ``"force": true``."""
        data = parse_json(request.body)
        if not isinstance(data, dict) or set(data) - {"replica", "force"} \
                or "replica" not in data or not isinstance(data.get("force", False), bool):
            raise BadRequest(400, "bad_request",
                             'expected {"replica": "<replica id>", "force": false}')
        replica = data["replica"]
        try:
            check_replica(replica)
        except ValueError as exc:
            raise BadRequest(400, "bad_replica", str(exc)) from None
        self.node.ready_to_trade(forced=data.get("force", False))
        if replica not in self.node.replica.members():
            raise BadRequest(409, "cannot_evict", f"{replica} is not a current member")
        unreachable = await gossip.pull_everything(self.node, self.node.client)
        unreachable = [u for u in unreachable if self.node.peers.get(u) is not None
                       and self.node.peers[u].replica != replica]
        if unreachable and not data.get("force", False):
            unknown = [u for u in unreachable if self.node.peers[u].replica is None]
            hint = (f"; {', '.join(unknown)} never answered this node, so which replica "
                    f"it is (maybe {replica} itself) is not known: a peer found only in "
                    f"the registry is forgotten {self.node.config.registry_ttl_s:g}s "
                    "after its first failure" if unknown else "")
            raise BadRequest(409, "peers_unreachable",
                             f"cannot reach {', '.join(unreachable)} (or still pulling after "
                             f"{gossip.EVERYTHING_S:g}s): evicting now could reject events of "
                             f"{replica} that only they hold (and that they may have reported "
                             f"final){hint}; retry, or force")
        self.node.ready_to_trade(forced=data.get("force", False))  # again, after the awaits
        try:
            delta = self.node.evict(replica)
        except ReplicaError as exc:
            raise BadRequest(409, "cannot_evict", str(exc)) from None
        await self.node.journal.sync()
        event = next(e for _, _, e in delta.entries())
        return json_response(200, {"evict": views.event_json(event),
                                   "final_clock": self.node.replica.frontier()})

    async def post_leave(self, request: Request) -> Response:
        """Leave the cluster for good: announce the leave (durable, pushed, replicated
        to a peer if one answers within the timeout), then stop the node."""
        _, timeout = parse_ack(request.query)
        self.node.ready_to_trade()
        await gossip.hand_over(self.node, self.node.client)  # forks it alone could see
        self.node.ready_to_trade()  # again, after the awaits
        with expecting_acks(self.node, "replicated"):
            delta = self.node.leave()
            if delta is None:
                raise BadRequest(409, "cannot_leave", "this node is not a member")
            await self.node.journal.sync()  # sealed, durable, and handed to the senders
            event = next(e for _, _, e in delta.entries())
            replicated = await wait_replicated(self.node, event.seq, "replicated", timeout)
        self.node.stop_requested.set()
        return json_response(200, {"leave": views.event_json(event), "replicated": replicated})
