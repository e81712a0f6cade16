"""What order entry over HTTP and over a WebSocket share: the answer's shape and
how an error becomes a status, an error code and a detail; and ``AtFlush``,
which places HTTP batches when the journal's next flush starts.

Both paths parse with requests.py, check with auth.py (``entitled``: the
account and the rate limit), place with ``Node.place_many`` and answer only
after ``journal.sync()``; they differ only in framing (one HTTP response, or
one ``answer`` message per command, see websocket.py).

Placing at the flush (``AtFlush``, durable stores): a batch is answered only
once the commit after it is durable, so it may as well be stamped and
matched when that commit's flush starts rather than when the request came:
the stamp is just a later clock (deterministic everywhere: the events carry
it). What that buys is a shorter way from stamp to peers: a peer merging the
batch's block undoes every event it applied with a later stamp, and a batch
stamped at the flush reaches it younger by the time it waited for that
flush (docs/performance.md, "rewinds, seventh pass"). The peers' pushes that
arrived meanwhile merge first (``Node.merge_arrivals``), then each waiting
batch is placed on its own, in arrival order (one refused batch fails alone).
The waiting list holds one entry per request in a handler, so the server's
connection bounds bound it; a handler cancelled before its flush takes its
batch back (nothing placed), one cancelled after leaves it placed (as before).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

from crdtbook.clock import LOGICAL_BITS

from ..asgi import BadRequest
from ..service import NotReady, iso_time
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
    return _placed_json(placed, replica.order_final(placed.order), extra)


def placed_answers(replica, placed: list, extra: dict | None = None) -> list[dict]:
    """``placed_json`` of each of a batch's orders, the final frontier read once
    (nothing changes it between them)."""
    frontier = replica.frontier()
    # _placed_json written out, and the ISO time made once per millisecond: a
    # batch is stamped in one flush, so its orders share their clock's wall
    # part, which is all iso_time reads (a frame and two calls an order saved).
    order_json, fill_json = views.order_json, views.fill_json
    answers = []
    last_ms = time = None
    for p in placed:
        order = p.order
        clock = order.clock
        ms = clock >> LOGICAL_BITS
        if ms != last_ms:
            time, last_ms = iso_time(clock), ms
        answer = {"order": order_json(order, order.status not in _NOT_FINAL and clock <= frontier,
                                      time),
                  "fills": [fill_json(f, False, clock, time) for f in p.fills]}
        if extra:
            answer.update(extra)
        answers.append(answer)
    return answers


_NOT_FINAL = ("open", "pending")  # as Replica.order_final says


def _placed_json(placed, final: bool, extra: dict | None) -> dict:
    order = placed.order
    clock = order.clock
    time = iso_time(clock)  # the order's and its fills' (a fill is its taker's time)
    answer = {"order": views.order_json(order, final, time),
              "fills": [views.fill_json(f, False, clock, time) for f in placed.fills]}
    if extra:
        answer.update(extra)
    return answer


class _Waiting:
    __slots__ = ("orders", "placed", "error")

    def __init__(self, orders) -> None:
        self.orders = orders
        self.placed: list | None = None
        self.error: BaseException | None = None


class AtFlush:
    """HTTP order batches placed at the start of the journal's next flush."""

    def __init__(self, node) -> None:
        self.node = node
        self.waiting: list[_Waiting] = []
        merge = node.journal.before  # the node's merge of pushes waiting: first

        def before() -> None:
            merge()
            self.place_waiting()

        node.journal.before = before

    async def place(self, orders) -> list:
        """Place ``orders`` (validated, entitled) at the next flush; return the Placed
        list once they are durable. Raises what ``place_many`` would (nothing placed),
        or StoreFailed."""
        node = self.node
        node.ready_to_trade()  # a node that may not trade says so at once
        waiting = _Waiting(orders)
        self.waiting.append(waiting)
        mark = node.journal.want_flush()
        try:
            await node.journal.sync(mark)
        finally:
            if waiting.placed is None and waiting.error is None:
                # cancelled (or the store failed) before its flush: never placed
                with contextlib.suppress(ValueError):
                    self.waiting.remove(waiting)
        if waiting.error is not None:
            raise waiting.error
        return waiting.placed

    def place_waiting(self) -> None:
        waiting, self.waiting = self.waiting, []
        place_many = self.node.place_many
        for entry in waiting:
            try:
                entry.placed = place_many(entry.orders)
            except Exception as exc:  # a refusal (ReplicaError, NotReady) or a bug:
                entry.error = exc  # its own handler answers it, the others go on
