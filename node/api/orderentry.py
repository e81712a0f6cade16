"""What order entry over HTTP and over a WebSocket share: the answer's shape and
how an error becomes a status, an error code and a detail.

Both paths parse with requests.py, check with auth.py (``entitled``: the
account and the rate limit), place with ``Node.place_many`` and answer only
after ``journal.sync()``; they differ only in framing (one HTTP response, or
one ``answer`` message per command, see websocket.py).
"""

from __future__ import annotations

from typing import NamedTuple

from ..asgi import BadRequest
from ..service import NotReady
from ..store.journal import StoreFailed
from . import views


class Failure(NamedTuple):
    status: int
    error: str
    detail: str
    headers: list[tuple[bytes, bytes]]


def failure(exc: BaseException) -> Failure | None:
    """The client-facing form of an expected refusal; None for anything else (a bug)."""
    if isinstance(exc, BadRequest):  # Denied included: its 401's WWW-Authenticate, ...
        return Failure(exc.status, exc.error, exc.detail, exc.headers)
    if isinstance(exc, NotReady):
        return Failure(exc.status, exc.error, exc.detail, [])
    if isinstance(exc, StoreFailed):
        return Failure(503, "store_failed", f"the store failed ({exc}); nothing was "
                       "acknowledged; the node needs its disk fixed and a restart", [])
    return None


def retry_after(failure: Failure) -> int | None:
    for name, value in failure.headers:
        if name == b"retry-after":
            return int(value)
    return None


def placed_json(replica, placed, extra: dict | None = None) -> dict:
    """The answer for one placed order: ``{"order": ORDER, "fills": [ORDER_FILL...]}``."""
    return {"order": views.order_json(placed.order, replica.order_final(placed.order)),
            "fills": [views.fill_json(f, False, placed.order.clock) for f in placed.fills],
            **(extra or {})}
