"""History reads: fills, orders and events, paged, from the store and from memory.

Theory of operation
-------------------
Every fill and every order lives in exactly one of three places, and moves
only forward through them:

1. memory (the replica's engine): provisional fills and orders not settled
   and final yet;
2. ``node.unflushed_*``: taken out of memory by compaction, not yet committed;
3. the store: final, for good.

Events move the same way (memory, ``node.unflushed_events``, the store's
rows): an event's row is written when compaction takes it out of memory.

A page reads the three in that order of age and stitches them together, so
a reader never sees a gap or a double while history moves.

Cursors are opaque strings every node understands for the final range:

* fills: the fill's number in replay order (fill ``i`` is the same fill on
  every node once final), so ``after=i`` continues with fill ``i+1``;
* orders and events: the position ``clock:replica:seq``, the total order
  every replica sorts by.
"""

from __future__ import annotations

import heapq

from crdtbook.clock import MAX_CLOCK
from crdtbook.dot import check_replica, check_seq
from crdtbook.replica import OrderView, ReplicaError

from ..asgi import BadRequest
from ..service import Node, stored_fill
from . import auth

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 10_000
ORDER_STATUSES = ("open", "filled", "cancelled", "rejected", "pending")


# -- parameters --------------------------------------------------------------
def parse_limit(query: dict[str, str]) -> int:
    text = query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not _digits(text, 6) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(400, "bad_limit", f"limit must be an integer 1..{MAX_LIMIT}")
    return int(text)


def parse_fill_cursor(query: dict[str, str]) -> int:
    text = query.get("after")
    if text is None:
        return -1
    if not _digits(text, 18):
        raise BadRequest(400, "bad_cursor", "after must be a fill cursor (a number) from `next`")
    return int(text)


def parse_position(query: dict[str, str]) -> tuple[int, str, int] | None:
    text = query.get("after")
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) != 3 or not _digits(parts[0], 19) or not _digits(parts[2], 19) \
                or int(parts[0]) > MAX_CLOCK:
            raise ValueError
        return int(parts[0]), check_replica(parts[1]), check_seq(int(parts[2]))
    except ValueError:
        raise BadRequest(400, "bad_cursor",
                         "after must be a position cursor (clock:replica:seq) from `next`") \
            from None


def _digits(text: str, most: int) -> bool:
    """ASCII digits only (``str.isdigit`` also takes superscripts and other scripts)."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def parse_account(query: dict[str, str]) -> str | None:
    account = query.get("account")
    if account is not None and not (0 < len(account) <= 64 and account.isprintable()):
        raise BadRequest(400, "bad_account", "account must be 1-64 printable characters")
    return account


def parse_status(query: dict[str, str]) -> str | None:
    status = query.get("status")
    if status is not None and status not in ORDER_STATUSES:
        raise BadRequest(400, "bad_status", f"status must be one of {', '.join(ORDER_STATUSES)}")
    return status


def position_cursor(position: tuple[int, str, int]) -> str:
    clock, replica, seq = position
    return f"{clock}:{replica}:{seq}"


# -- fills -------------------------------------------------------------------
async def fills_page(node: Node, after: int, limit: int, account: str | None):
    """(fills as StoredFill with their final flag, next cursor or None).

    Compaction may move fills from memory to the store while the store is
    read (the read waits on a thread): the store part is read again until it
    reaches what the store held when memory was last looked at, and the
    unflushed and memory parts are then read with no wait in between, so the
    three parts join without a gap or a double.
    """
    replica = node.replica
    out: list = []
    seen = after
    while len(out) <= limit:
        unflushed = node.unflushed_fills
        stored_end = unflushed[0].index if unflushed else replica.fills_base
        if seen + 1 >= stored_end:
            break
        want = limit + 1 - len(out)
        rows = await node.journal.read(node.store.fills_page, seen, want, account)
        out.extend(rows)
        if rows:
            seen = rows[-1].index
        if len(rows) < want:  # every fill committed before the read was scanned
            seen = max(seen, stored_end - 1)
    # no await from here on: unflushed and memory are read at one instant
    final_count = replica.final_fill_count()
    if len(out) <= limit:
        out.extend(f for f in node.unflushed_fills if f.index > seen and _touches(f, account))
        memory_base = replica.fills_base
        raw = replica.engine.fills
        for i in range(max(seen + 1 - memory_base, 0), len(raw)):
            if len(out) > limit:
                break
            fill = stored_fill(memory_base + i, raw[i])
            if _touches(fill, account):
                out.append(fill)
    more = len(out) > limit
    out = out[:limit]
    return [(f, f.index < final_count) for f in out], (str(out[-1].index) if more else None)


def _touches(fill, account: str | None) -> bool:
    return account is None or account in (fill.taker_account, fill.maker_account)


# -- orders ------------------------------------------------------------------
async def order(node: Node, replica_id: str, seq: int):
    """(OrderView, FinalOrder or None, stored event or None) of any order ever held, or None."""
    view = node.replica.order((replica_id, seq))
    if view is not None:
        return view, None, None
    pending = node.unflushed_orders.get((replica_id, seq))
    if pending is not None:
        return pending[0], pending[1], None
    found = await node.journal.read(node.store.order, replica_id, seq)
    if found is None:
        return None
    event, final = found
    return stored_view(event, final), final, event


def stored_view(event, final) -> OrderView:
    """The view of a stored order: its final state, or pending if it has none yet
    (held in the store, not applied in memory: waiting on a gap)."""
    if final is None:
        return OrderView(event.dot, event.clock, event.side, event.type, event.price,
                         event.qty, 0, 0, 0, "pending", event.account, None)
    return OrderView(event.dot, event.clock, event.side, event.type, event.price, event.qty,
                     final.filled, 0, event.qty - final.filled, final.status, event.account,
                     final.reason)


async def orders_page(node: Node, after, limit: int, account: str | None, status: str | None):
    """([(position, OrderView, FinalOrder or None)], next cursor): oldest position first."""
    replica = node.replica
    memory = []
    for view in replica.orders():
        if (after is None or (view.clock, view.dot.replica, view.dot.seq) > after) \
                and (account is None or view.account == account) \
                and (status is None or view.status == status):
            memory.append(((view.clock, view.dot.replica, view.dot.seq), view, None))
            if len(memory) > limit:
                break
    pending = sorted(
        ((view.clock, view.dot.replica, view.dot.seq), view, final)
        for view, final in node.unflushed_orders.values()
        if (after is None or (view.clock, view.dot.replica, view.dot.seq) > after)
        and (account is None or view.account == account)
        and (status is None or view.status == status))
    stored = []
    if status not in ("open", "pending"):  # never final: only in memory
        rows = await node.journal.read(node.store.final_orders_page, after, limit + 1,
                                       account, status)
        stored = [(event.position, stored_view(event, final), final) for event, final in rows]
    merged, seen = [], set()
    for item in heapq.merge(stored, pending, memory, key=lambda item: item[0]):
        if item[0] in seen:  # moved from memory to the store during the read
            continue
        seen.add(item[0])
        merged.append(item)
        if len(merged) > limit:
            break
    more = len(merged) > limit
    merged = merged[:limit]
    return merged, (position_cursor(merged[-1][0]) if more else None)


async def cancel(node: Node, dot, who: auth.Principal):
    """Cancel an order placed at this node for ``who``; BadRequest (403/404/409/429)
    with the reason otherwise.

    Only the order's account (or the admin) cancels it, within its rate limit.
    Only an order that still rests can be cancelled: a filled, cancelled or
    rejected one gets 409 whether it is still in memory or already in the store.
    """
    view = node.replica.order(dot)
    if view is None:
        if await order(node, dot.replica, dot.seq) is not None:
            raise BadRequest(409, "cannot_cancel",
                             f"order {dot} is settled and final; nothing rests to cancel")
        raise BadRequest(404, "not_found", f"no order {dot}")
    if dot.replica != node.id:
        raise BadRequest(409, "not_local",
                         f"order {dot} was placed at replica {dot.replica}, not at this node "
                         f"({node.id}); cancel it through its own node")
    auth.may_cancel(who, view.account, str(dot))
    if view.status != "open":
        raise BadRequest(409, "cannot_cancel", f"order {dot} is {view.status}; nothing rests "
                                               "to cancel")
    node.limiter.take({view.account: 1})
    try:
        result = node.cancel(dot)
    except ReplicaError as exc:
        raise BadRequest(409, "cannot_cancel", str(exc)) from None
    await node.journal.sync()
    return result


# -- events ------------------------------------------------------------------
async def events_page(node: Node, after, limit: int):
    """Every event the node holds, in position order: the store's rows (events
    compacted out of memory), the unflushed ones and those in memory.

    As for orders, memory and the unflushed events are read at one instant
    before the store's read: an event compacted meanwhile is read twice and
    kept once, and none is missed (it leaves ``unflushed_events`` only once
    its row is committed)."""
    await node.journal.sync()  # orders answered without waiting (ephemeral) are durable too
    memory = _held_after(node.replica.state, after, limit + 1)
    unflushed = heapq.nsmallest(limit + 1, (e for e in node.unflushed_events
                                            if after is None or e.position > after))
    stored = await node.journal.read(node.store.events_page, after, limit + 1)
    events, seen = [], set()
    for event in heapq.merge(stored, unflushed, memory):
        position = event.position
        if position in seen:
            continue
        seen.add(position)
        events.append(event)
        if len(events) > limit:
            break
    more = len(events) > limit
    events = events[:limit]
    return events, (position_cursor(events[-1].position) if more else None)


def _held_after(state, after, count: int) -> list:
    """The first ``count`` events held in memory after position ``after``, in order:
    one pass and a bounded heap, not a sort of everything held (the route is public)."""
    held = (e for seqs in state.store.values() for e in seqs.values())
    if after is None:
        return heapq.nsmallest(count, held)
    # an event compares as its fields, position first: one at the cursor's own
    # position compares above it, so it is left out by identity
    at = state.get(after[1], after[2])
    if at is not None and at.position != after:
        at = None  # a cursor that is not this event's position: nothing to leave out
    return heapq.nsmallest(count, (e for e in held if e > after and e is not at))
