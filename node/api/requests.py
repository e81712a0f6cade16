"""Validation of client JSON: turn request bodies into core arguments or a clear error.

Every check runs before anything is created, so a bad request (or one bad
order in a batch) changes nothing.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from crdtbook.amount import AmountError, parse_amount
from crdtbook.dot import Dot, DotError, parse_dot, shown
from crdtbook.events import MARKET, MAX_ACCOUNT_LEN, SIDES, TYPES

from ..asgi import BadRequest

ORDER_FIELDS = ("side", "qty", "price", "type", "account")
MAX_BATCH = 10_000
MAX_DEPTH = 10_000


class OrderRequest(NamedTuple):
    side: str
    qty: str
    price: str | None
    type: str
    account: str


def parse_json(body: bytes) -> object:
    """Client JSON: no floats, NaN or Infinity, no key twice in an object."""
    if not body:
        raise BadRequest(400, "bad_json", "request body is empty; expected JSON")
    try:
        if isinstance(body, bytes | bytearray):  # as json.loads does: UTF-8, -16 or -32
            body = body.decode(json.detect_encoding(body), "surrogatepass")
        return _DECODER.decode(body)
    except BadRequest:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "bad_json",
                         f"request body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise BadRequest(400, "bad_json", "request body is nested too deeply") from None


def unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refused if a key appears twice (json.loads would keep the last)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise BadRequest(400, "bad_json", f"key {shown(twice)} appears twice in an object")
    return data


def _no_float(text: str) -> object:
    raise BadRequest(400, "bad_number",
                     f"number {text[:40]} is not allowed: send amounts as decimal strings "
                     "like \"12.5\"")


def _no_constant(text: str) -> object:
    raise BadRequest(400, "bad_number", f"{text} is not allowed in a request")


def parse_orders(body: bytes) -> tuple[list[OrderRequest], bool]:
    """Return the orders and whether the body was a batch (a JSON array)."""
    data = parse_json(body)
    if isinstance(data, list):
        if not data:
            raise BadRequest(400, "bad_order", "an order batch must not be empty")
        if len(data) > MAX_BATCH:
            raise BadRequest(413, "batch_too_large",
                             f"a batch holds at most {MAX_BATCH} orders, got {len(data)}")
        try:
            return [parse_order(item, "") for item in data], True
        except BadRequest:
            # the refusal says which order: the prefix is made only for it
            for i, item in enumerate(data):
                parse_order(item, f"order {i}: ")
            raise
    return [parse_order(data, "")], False


# One decoder for every request (json.loads with hooks builds a new one each call).
_DECODER = json.JSONDecoder(parse_float=_no_float, parse_constant=_no_constant,
                            object_pairs_hook=unique_keys)


def parse_order(data: object, where: str) -> OrderRequest:
    if not isinstance(data, dict):
        raise BadRequest(400, "bad_order", f"{where}an order must be a JSON object")
    if not _ORDER_FIELD_SET.issuperset(data):
        unknown = sorted(set(data) - _ORDER_FIELD_SET)
        raise BadRequest(400, "bad_order",
                         f"{where}unknown field(s) {', '.join(shown(k) for k in unknown[:5])}; "
                         f"allowed: {', '.join(ORDER_FIELDS)}")
    side = data.get("side")
    if side not in SIDES:
        raise BadRequest(400, "bad_order", f"{where}side must be \"buy\" or \"sell\"")
    kind = data.get("type", "limit")
    if kind not in TYPES:
        raise BadRequest(400, "bad_order", f"{where}type must be one of {', '.join(TYPES)}")
    if "qty" not in data:
        raise BadRequest(400, "bad_order", f"{where}qty is required")
    qty = _amount(data["qty"], "qty", where)
    price = data.get("price")
    if kind == MARKET:
        if price is not None:
            raise BadRequest(400, "bad_order", f"{where}a market order takes no price")
    elif price is None:
        raise BadRequest(400, "bad_order", f"{where}a {kind} order needs a price")
    else:
        price = _amount(price, "price", where)
    account = data.get("account", "")
    if not isinstance(account, str) or len(account) > MAX_ACCOUNT_LEN \
            or not account.isprintable():
        raise BadRequest(400, "bad_order",
                         f"{where}account must be a string of at most {MAX_ACCOUNT_LEN} "
                         "printable characters")
    return _new(OrderRequest, (side, qty, price, kind, account))


_ORDER_FIELD_SET = frozenset(ORDER_FIELDS)
_new = tuple.__new__  # a NamedTuple without its Python-level __new__ (one per order)


def _amount(value: object, name: str, where: str) -> str:
    try:
        parse_amount(value, name)
    except AmountError as exc:
        raise BadRequest(400, "bad_amount", f"{where}{exc}") from None
    return value  # type: ignore[return-value]


def parse_order_id(text: str) -> Dot:
    try:
        return parse_dot(text)
    except DotError as exc:
        raise BadRequest(400, "bad_id", str(exc)) from None


def parse_depth(query: dict[str, str]) -> int | None:
    raw = query.get("depth")
    if raw is None:
        return None
    if not raw.isdigit() or not raw.isascii() or len(raw) > 6 or not 0 < int(raw) <= MAX_DEPTH:
        raise BadRequest(400, "bad_query", f"depth must be an integer 1..{MAX_DEPTH}")
    return int(raw)
