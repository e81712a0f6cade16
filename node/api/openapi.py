"""The client API described as an OpenAPI 3.1 document (``GET /openapi.json``).

Theory of operation
-------------------
The document is Python data built here, next to the routes it describes
(app.py) and the shapes they answer with (views.py), and serialized once.
Schemas carry the names docs/api.md gives the JSON shapes (ORDER, FILL,
ORDER_FILL, CANCEL, EVENT, STATUS, ...). Every operation lists its query
parameters, its request body, its answers by status code and every error
status it can give, each with the error body ``{"error", "detail"}``.

tests/test_openapi.py keeps it honest: it validates the document against
the OpenAPI 3.1 schema and runs schemathesis against a live node, checking
that every answer's status, content type, headers and body are documented.

Rules this module keeps
-----------------------
* A schema is as strict as the node's answers (``additionalProperties:
  false``, every field the node always sends is required), so a change to a
  JSON shape that is not made here too fails the test.
* Request schemas are never stricter than the node: what a schema refuses,
  the node refuses too (schemathesis sends such requests and expects a 4xx).
* The peer API (CBOR), the registry and Grenache PeerRPC are not described
  here: they are for nodes and Grenache clients (docs/api.md has them); the
  WebSocket stream is described in docs/streams.md.
"""

from __future__ import annotations

import functools
import json

from ..asgi import MAX_HEADER_BYTES
from .history import MAX_LIMIT, ORDER_STATUSES
from .requests import MAX_BATCH, MAX_DEPTH

VERSION = "1"
JSON_TYPE = "application/json"
REF = "#/components/schemas/"
ACCOUNT_TOKEN, ADMIN_TOKEN = "accountToken", "adminToken"


def ref(name: str) -> dict:
    return {"$ref": REF + name}


def nullable(schema: dict) -> dict:
    return {"oneOf": [schema, {"type": "null"}]}


def obj(required: dict, optional: dict | None = None, closed: bool = True) -> dict:
    """An object schema: ``required`` properties (always sent) and ``optional`` ones."""
    schema = {"type": "object", "properties": {**required, **(optional or {})},
              "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema


STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 0}
AMOUNT = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,8})?$",
          "description": "a decimal string, at most 8 decimal places, at most 10^12"}
# What the node takes (crdtbook/amount.py): leading zeros, more than 0, at most 10^12,
# at most 8 decimals. A pattern without lookahead: by where the first non-zero digit is.
_FRACTION = "|".join(f"0{{{k}}}[1-9][0-9]{{0,{7 - k}}}" for k in range(8))
AMOUNT_IN = {"type": "string",
             "pattern": rf"^(0*[1-9][0-9]{{0,11}}(\.[0-9]{{1,8}})?|0*1000000000000(\.0{{1,8}})?"
                        rf"|0+\.({_FRACTION}))$",
             "description": "a decimal string: more than 0, at most 10^12, at most 8 decimal "
                            "places"}
ZERO_OR_AMOUNT = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,8})?$"}
REPLICA = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
           "description": "a replica id (a node's: 32 lowercase base32 characters)"}
DOT_PARAM = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}:[0-9]{1,19}$"}
DOT = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}:[1-9][0-9]{0,18}$",
       "description": "an event id, replica:seq"}
SEQ = {"type": "integer", "minimum": 1}
CLOCK = {"type": "integer", "minimum": 0,
         "description": "a hybrid logical clock: wall-clock ms << 16, plus a counter"}
TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
        "description": "ISO 8601 UTC with milliseconds"}
CURSOR = nullable({"type": "string", "description": "pass as `after` for the next page"})
SIDE = {"type": "string", "enum": ["buy", "sell"]}
ORDER_TYPES = ["limit", "market", "ioc", "fok", "post_only"]
ORDER_ACCOUNT = {"type": "string", "maxLength": 64,
                 "description": "the token's account (default); only the admin token names "
                                "another; printable characters"}

SCHEMAS: dict[str, dict] = {
    "ERROR": obj({"error": {"type": "string", "description": "a short code, e.g. bad_order"},
                  "detail": {"type": "string", "description": "what was wrong, in a sentence"}}),
    "ORDER_REQUEST": {"oneOf": [ref("PRICED_ORDER"), ref("MARKET_ORDER")]},
    "PRICED_ORDER": obj(
        {"side": SIDE, "qty": AMOUNT_IN, "price": AMOUNT_IN},
        {"type": {"type": "string", "enum": [t for t in ORDER_TYPES if t != "market"],
                  "description": "default limit"},
         "account": ORDER_ACCOUNT}),
    "MARKET_ORDER": obj(
        {"side": SIDE, "qty": AMOUNT_IN, "type": {"const": "market"}},
        {"price": {"type": "null", "description": "a market order takes no price"},
         "account": ORDER_ACCOUNT}),
    "ORDER": obj({
        "id": DOT, "replica": REPLICA, "seq": SEQ, "clock": CLOCK, "side": SIDE,
        "type": {"type": "string", "enum": ORDER_TYPES},
        "price": nullable(AMOUNT), "qty": AMOUNT, "filled": ZERO_OR_AMOUNT,
        "resting": ZERO_OR_AMOUNT, "cancelled": ZERO_OR_AMOUNT,
        "status": {"type": "string", "enum": list(ORDER_STATUSES)},
        "reason": nullable(STRING), "final": BOOLEAN, "account": STRING, "time": TIME}),
    "ORDER_FILL": obj(
        {"id": STRING, "taker": DOT, "maker": DOT, "price": AMOUNT, "qty": AMOUNT,
         "taker_side": SIDE, "final": BOOLEAN},
        {"time": TIME}),
    "ORDER_ANSWER": obj(
        {"order": ref("ORDER"), "fills": {"type": "array", "items": ref("ORDER_FILL")}},
        {"replicated": {"type": "boolean", "description": "with ack replicated or all: "
                                                          "peers confirmed in time"}}),
    "FILL": obj({
        "id": STRING, "index": COUNT, "taker": DOT, "maker": DOT, "price": AMOUNT,
        "qty": AMOUNT, "taker_side": SIDE, "taker_account": STRING, "maker_account": STRING,
        "clock": CLOCK, "time": TIME, "final": BOOLEAN}),
    "CANCEL": obj({
        "id": DOT, "kind": {"const": "cancel"}, "replica": REPLICA, "seq": SEQ, "clock": CLOCK,
        "target": DOT, "status": {"type": "string",
                                  "enum": ["cancelled", "noop", "rejected", "pending"]},
        "removed": ZERO_OR_AMOUNT, "reason": nullable(STRING)}),
    "EVENT": {"oneOf": [ref("ORDER_EVENT"), ref("CANCEL_EVENT"), ref("MEMBER_EVENT")]},
    "LEVEL": obj({"price": AMOUNT, "qty": AMOUNT, "orders": {"type": "integer", "minimum": 1}}),
    "BOOK": obj({
        "bids": {"type": "array", "items": ref("LEVEL")},
        "asks": {"type": "array", "items": ref("LEVEL")},
        "digest": STRING, "events": COUNT, "events_total": COUNT, "final_clock": CLOCK}),
    "PEER": obj({
        "url": STRING, "replica": nullable(STRING), "last_seen_s": nullable({"type": "number"}),
        "failures": COUNT, "failing_s": nullable({"type": "number"}),
        "error": nullable(STRING)}),
    "STATUS": obj({
        "replica": REPLICA, "book": STRING, "url": STRING,
        "peers": {"type": "array", "items": ref("PEER")},
        "events": COUNT, "events_total": COUNT, "applied": COUNT, "digest": STRING,
        "clock": CLOCK, "final_clock": CLOCK, "final_lag_ms": nullable(COUNT),
        "members": {"type": "array", "items": REPLICA},
        "held_back_by": nullable(obj({"replica": REPLICA, "counted_clock": CLOCK,
                                      "since": nullable(TIME), "behind_ms": COUNT})),
        "joined": BOOLEAN, "caught_up": BOOLEAN,
        "retired": nullable({"type": "string", "enum": ["left", "evicted"]}),
        "evicted": BOOLEAN, "data_dir": nullable(STRING),
        "store": obj({"commits": COUNT, "committed_events": COUNT,
                      "failed": nullable(STRING)}),
        "conflict": nullable(STRING), "public_key": STRING,
        "refused": {"type": "object", "required": ["messages"],
                    "additionalProperties": COUNT},
        "registry": STRING, "rpc": nullable(STRING),
        "finality": obj({"regressions": COUNT, "violations": COUNT}),
        "gossip": {"type": "object", "additionalProperties": COUNT}},
        closed=False),  # new fields may come; those listed are always there
    "CONTEXT": obj({"replica": REPLICA,
                    "context": {"type": "object", "additionalProperties": COUNT}}),
    "ACCOUNT": obj({"account": STRING, "created": TIME, "revoked": nullable(TIME)}),
    "NEW_ACCOUNT": obj({"account": STRING, "created": TIME, "revoked": {"type": "null"},
                        "token": {"type": "string", "pattern": "^crdtbook-acct-[0-9a-f]{32}$"}}),
}
_EVENT_COMMON = {"id": DOT, "clock": CLOCK, "time": TIME, "replica": REPLICA, "seq": SEQ}
SCHEMAS["ORDER_EVENT"] = obj({
    **_EVENT_COMMON, "kind": {"const": "order"}, "side": SIDE,
    "type": {"type": "string", "enum": ORDER_TYPES}, "price": nullable(AMOUNT), "qty": AMOUNT,
    "account": STRING})
SCHEMAS["CANCEL_EVENT"] = obj({**_EVENT_COMMON, "kind": {"const": "cancel"}, "target": DOT})
SCHEMAS["MEMBER_EVENT"] = obj({
    **_EVENT_COMMON, "kind": {"const": "member"},
    "action": {"type": "string", "enum": ["join", "leave", "evict"]}, "target": REPLICA,
    "last_seq": COUNT})


# -- answers ------------------------------------------------------------------
def json_content(schema: dict) -> dict:
    return {"content": {JSON_TYPE: {"schema": schema}}}


def answer(description: str, schema: dict, headers: dict | None = None) -> dict:
    out = {"description": description, **json_content(schema)}
    if headers:
        out["headers"] = headers
    return out


def error(description: str) -> dict:
    return answer(description, ref("ERROR"))


RESPONSES = {
    "BadRequest": error("Malformed input (`bad_json`, `bad_order`, `bad_amount`, `bad_id`, "
                        "`bad_query`, `bad_limit`, `bad_cursor`, ...): `detail` names the "
                        "field. Nothing changed."),
    "Unauthorized": answer(
        "No token, or a malformed, unknown or revoked one (`unauthorized`).", ref("ERROR"),
        {"WWW-Authenticate": {"required": True, "schema": STRING}}),
    "Forbidden": error("The token's account may not do this (`forbidden`)."),
    "NotFound": error("No such order or account (`not_found`)."),
    "Conflict": error("Understood but cannot be done (see the operation), or this replica "
                      "left or was evicted (`left`, `evicted`)."),
    "TooSlow": error("The request body did not arrive in time (`too_slow`)."),
    "TooLarge": error("The body is over the limit (`too_large`, 4 MiB), or the batch is "
                      "larger than 10,000 orders or than the rate burst (`batch_too_large`)."),
    "RateLimited": answer(
        "Over the account's rate limit (`rate_limited`); wait Retry-After seconds.",
        ref("ERROR"), {"Retry-After": {"required": True,
                                       "schema": {"type": "string", "pattern": "^[0-9]+$"}}}),
    "HeadersTooLarge": error(f"Request line and headers over {MAX_HEADER_BYTES} bytes "
                             "(`headers_too_large`)."),
    "Unavailable": error("The node cannot do this now: `joining`, `catching_up`, `conflict`, "
                         "`store_failed`, or `busy` (too many large bodies being read); "
                         "nothing changed."),
}
COMMON = {"408": "TooSlow", "413": "TooLarge", "431": "HeadersTooLarge", "503": "Unavailable"}
UNAUTHORIZED = {"401": "Unauthorized"}


def responses(ok: dict, *errors: dict) -> dict:
    out = dict(ok)
    for group in (COMMON, *errors):
        for status, name in group.items():
            out[status] = {"$ref": f"#/components/responses/{name}"}
    return dict(sorted(out.items()))


def errs(*statuses: str) -> dict:
    names = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound",
             "409": "Conflict", "429": "RateLimited"}
    return {s: names[s] for s in statuses}


# -- parameters -----------------------------------------------------------------
def query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def path_param(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
              f"items per page, 1 to {MAX_LIMIT} (default 1,000)")
POSITION = query("after", {"type": "string",
                           "pattern": r"^[0-9]{1,19}:[A-Za-z0-9][A-Za-z0-9._-]{0,63}:[0-9]{1,19}$"},
                 "a position cursor (clock:replica:seq), the previous page's `next`")
ACCOUNT_FILTER = query("account", {"type": "string", "minLength": 1, "maxLength": 64},
                       "only this account's (its token or the admin's)")
ACK = query("ack", {"type": "string", "enum": ["local", "replicated", "all"]},
            "write concern: answer once durable here (local, default), also held by a peer "
            "(replicated), or by every other member (all)")
TIMEOUT = query("timeout", {"type": "string", "pattern": r"^[0-9]{1,2}(\.[0-9]{1,3})?$"},
                "seconds to wait for peers, more than 0, at most 60 (default 5)")
ORDER_ID = path_param("id", DOT_PARAM, "the order's id, replica:seq")


def page(key: str, item: str, extra: dict | None = None) -> dict:
    return obj({key: {"type": "array", "items": ref(item)}, "next": CURSOR, **(extra or {})})


ANYONE: list = []
TRADER = [{ACCOUNT_TOKEN: []}, {ADMIN_TOKEN: []}]
OPERATOR = [{ADMIN_TOKEN: []}]


def op(operation_id: str, summary: str, security: list, ok: dict, *errors: dict,
       params: list | None = None, body: dict | None = None, tags: tuple = ("market data",)
       ) -> dict:
    out = {"operationId": operation_id, "summary": summary, "tags": list(tags),
           "security": security, "responses": responses(ok, *errors)}
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, **json_content(body)}
    return out


ORDER_BODY = {"oneOf": [ref("ORDER_REQUEST"),
                        {"type": "array", "items": ref("ORDER_REQUEST"), "minItems": 1,
                         "maxItems": MAX_BATCH}]}
ORDER_ANSWERS = {"oneOf": [ref("ORDER_ANSWER"),
                           {"type": "array", "items": ref("ORDER_ANSWER"), "minItems": 1}]}
TEXT = "text/plain"

PATHS = {
    "/orders": {
        "post": op("placeOrders", "Place an order, or a batch (a JSON array)", TRADER,
                   {"201": answer("Placed and durable here (and replicated as asked)",
                                  ORDER_ANSWERS),
                    "202": answer("Placed and durable here; peers did not confirm in time",
                                  ORDER_ANSWERS)},
                   errs("400", "401", "403", "409", "429"),
                   params=[ACK, TIMEOUT], body=ORDER_BODY, tags=("orders",)),
        "get": op("listOrders", "Every order the node ever held, oldest position first",
                  TRADER, {"200": answer("A page", page("orders", "ORDER"))},
                  errs("400", "401", "403"),
                  params=[POSITION, LIMIT, ACCOUNT_FILTER,
                          query("status", {"type": "string", "enum": list(ORDER_STATUSES)},
                                "only orders with this status")], tags=("orders",)),
    },
    "/orders/{id}": {
        "get": op("getOrder", "One order", TRADER, {"200": answer("The order", ref("ORDER"))},
                  errs("400", "401", "404"), params=[ORDER_ID], tags=("orders",)),
        "delete": op("cancelOrder", "Cancel an order placed at this node", TRADER,
                     {"200": answer("The cancel, durable here", obj({"cancel": ref("CANCEL")}))},
                     errs("400", "401", "403", "404", "409", "429"), params=[ORDER_ID],
                     tags=("orders",)),
    },
    "/book": {"get": op("getBook", "The book, best price first on each side", ANYONE,
                        {"200": answer("The book", ref("BOOK"))}, errs("400"),
                        params=[query("depth", {"type": "integer", "minimum": 1,
                                                "maximum": MAX_DEPTH},
                                      "price levels per side (default: all)")])},
    "/fills": {"get": op("listFills", "Every fill, in replay order, oldest first",
                         [{}, *TRADER],
                         {"200": answer("A page", page("fills", "FILL",
                                                       {"final_clock": CLOCK}))},
                         errs("400", "401", "403"),
                         params=[query("after", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                                       "a fill cursor (a fill number), the previous page's "
                                       "`next`"),
                                 LIMIT, {**ACCOUNT_FILTER, "description":
                                         "only fills this account took part in (private: its "
                                         "token or the admin's)"}])},
    "/events": {"get": op("listEvents", "Every event the node holds, in position order",
                          ANYONE, {"200": answer("A page", page("events", "EVENT"))},
                          errs("400"), params=[POSITION, LIMIT])},
    "/status": {"get": op("getStatus", "The node's state", ANYONE,
                          {"200": answer("The state", ref("STATUS"))}, tags=("node",))},
    "/context": {"get": op("getContext", "For each origin, the highest seq held with no gap",
                           ANYONE, {"200": answer("The causal context", ref("CONTEXT"))},
                           tags=("node",))},
    "/accounts": {
        "post": op("addAccount", "Make an account; its token is in this answer only",
                   OPERATOR, {"201": answer("The account and its token", ref("NEW_ACCOUNT"))},
                   errs("400", "401", "409"),
                   body=obj({"account": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$",
                                         "description": "1-64 letters, digits, '.', '_', "
                                                        "'-' or '@'"}}),
                   tags=("operator",)),
        "get": op("listAccounts", "Every account, by name, revoked ones included", OPERATOR,
                  {"200": answer("The accounts",
                                 obj({"accounts": {"type": "array", "items": ref("ACCOUNT")}}))},
                  errs("401"), tags=("operator",)),
    },
    "/accounts/{name}": {
        "delete": op("revokeAccount", "Revoke an account: its token stops working at once",
                     OPERATOR, {"200": answer("The account, revoked", ref("ACCOUNT"))},
                     errs("401", "404"),
                     params=[path_param("name", STRING, "the account's name")],
                     tags=("operator",)),
    },
    "/evict": {"post": op(
        "evict", "Evict a replica that is gone (after pulling from every peer)", OPERATOR,
        {"200": answer("The evict event", obj({"evict": ref("EVENT"), "final_clock": CLOCK}))},
        errs("400", "401", "409"),
        body=obj({"replica": {**REPLICA, "description": "the replica id to evict"}},
                 {"force": {"type": "boolean", "description": "evict even while a peer is "
                                                              "unreachable"}}),
        tags=("operator",))},
    "/leave": {"post": op(
        "leave", "Leave the cluster for good, then stop the node", OPERATOR,
        {"200": answer("The leave event", obj({"leave": ref("EVENT"),
                                               "replicated": BOOLEAN}))},
        errs("400", "401", "409"), params=[ACK, TIMEOUT], tags=("operator",))},
    "/metrics": {"get": op(
        "getMetrics", "Prometheus metrics (text exposition format)", ANYONE,
        {"200": {"description": "The metrics (docs/operations.md lists them)",
                 "content": {TEXT: {"schema": STRING}}}}, tags=("node",))},
    "/openapi.json": {"get": op(
        "getOpenAPI", "This document", ANYONE,
        {"200": answer("The OpenAPI 3.1 document", {"type": "object"})}, tags=("node",))},
}

DESCRIPTION = """\
The client API of a crdtbook node: JSON over HTTP on the node's port.

Amounts are decimal strings (positive, at most 8 decimal places, at most
10^12); JSON numbers with a fraction are refused. Ids are `replica:seq`.
Every error is a 4xx or 5xx with the body `{"error": "code", "detail":
"sentence"}` and changes nothing; a method a path does not list gets 405
`method_not_allowed`, an unknown path 404 `not_found`.

Authentication: `Authorization: Bearer TOKEN`, an account's token (order
entry, an account's own history) or the node's admin token (operator
routes, and any account). Market data is public.

Not described here: the peer API (CBOR), the registry and Grenache PeerRPC
(docs/api.md), and the WebSocket stream `GET /ws` (docs/streams.md)."""


@functools.cache
def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "crdtbook node", "version": VERSION, "description": DESCRIPTION,
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "tags": [
            {"name": "orders", "description": "order entry and an account's orders"},
            {"name": "market data", "description": "public: book, fills, events"},
            {"name": "node", "description": "the node's state, metrics and this document"},
            {"name": "operator", "description": "the admin token's routes"},
            {"name": "streams", "description": "GET /ws, a WebSocket (not HTTP requests and "
                                               "answers): see docs/streams.md"},
        ],
        "paths": PATHS,
        "components": {
            "schemas": dict(sorted(SCHEMAS.items())),
            "responses": RESPONSES,
            "securitySchemes": {
                ACCOUNT_TOKEN: {"type": "http", "scheme": "bearer",
                                "description": "an account's token (crdtbook-acct-...): acts "
                                              "for that account"},
                ADMIN_TOKEN: {"type": "http", "scheme": "bearer",
                              "description": "the node's admin token (DIR/admin-token): "
                                            "operator routes, and acts for any account"},
            },
        },
    }


@functools.cache
def document_json() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()
