"""A deliberately simple reference engine, to check the real one against.

Plain lists, full sorts, no incremental state, no cleverness: given the set of
events a replica holds, compute which are admitted, then replay them in
position order on a book that is, per side, one list of resting orders kept in
priority order (best price, then earliest position). If the real engine and
this one ever disagree, the real one is wrong.

A valid leave or evict cancels, at its position, every order of its target
still resting (reason "owner left" / "owner evicted").
"""

from __future__ import annotations

from bisect import bisect_left, insort

from crdtbook.events import BUY, CANCEL, EVICT, FOK, LEAVE, LIMIT, MARKET, MEMBER, POST_ONLY


class RefOrder:
    def __init__(self, event):
        self.event = event
        self.remaining = 0
        self.filled = 0
        self.rejected = False
        self.cancel_reason = None  # "owner left" / "owner evicted"


def admitted(events):
    """Events of each replica with seqs 1..n all present; and the rejected ones.

    A replica's chain is valid while its clocks strictly increase; the first
    event that does not, and every later one of that replica, is rejected.
    """
    by_replica = {}
    for event in events:
        by_replica.setdefault(event.replica, {})[event.seq] = event
    ready, rejected = [], set()
    for replica in sorted(by_replica):
        seqs = by_replica[replica]
        seq, last_clock, broken = 1, 0, False
        while seq in seqs:
            event = seqs[seq]
            if broken or event.clock <= last_clock:
                broken = True
                rejected.add((replica, seq))
            last_clock = event.clock
            ready.append(event)
            seq += 1
    # A valid leave or evict rejects every later event of its target.
    cutoff = {}
    for event in ready:
        if event.kind != MEMBER or (event.replica, event.seq) in rejected:
            continue
        if event.action == LEAVE and event.target == event.replica \
                and event.last_seq == event.seq:
            cutoff[event.target] = min(cutoff.get(event.target, event.seq), event.seq)
        if event.action == EVICT and event.target != event.replica:
            cutoff[event.target] = min(cutoff.get(event.target, event.last_seq), event.last_seq)
    for event in ready:
        if event.seq > cutoff.get(event.replica, event.seq):
            rejected.add((event.replica, event.seq))
    return sorted(ready), rejected


def replay(events):
    """Return (fills, orders, book) for a set of events.

    fills:  list of (taker dot, maker dot, price, qty) in replay order
    orders: {dot: (filled, resting, status)}
    book:   (bids, asks), each a list of (price, total qty, order count), best first
    """
    return replay_all(events)[:3]


def replay_all(events):
    """``replay``'s (fills, orders, book), plus {dot: reason} of the orders a leave
    or evict cancelled."""
    ready, rejected = admitted(events)
    # side -> list of (priority key, RefOrder), best first
    book = {BUY: [], "sell": []}
    orders = {}
    fills = []
    for event in ready:
        dot = (event.replica, event.seq)
        if event.kind == MEMBER:
            # A valid leave or evict cancels every resting order of its target.
            valid = dot not in rejected and (
                (event.action == LEAVE and event.target == event.replica
                 and event.last_seq == event.seq)
                or (event.action == EVICT and event.target != event.replica))
            if valid:
                why = "owner left" if event.action == LEAVE else "owner evicted"
                for side in book.values():
                    for entry in [e for e in side if e[1].event.replica == event.target]:
                        side.remove(entry)
                        entry[1].remaining = 0
                        entry[1].cancel_reason = why
            continue
        if event.kind == CANCEL:
            target = orders.get((event.target_replica, event.target_seq))
            ok = (  # a cancel of a non-order is a no-op, like one of a filled order
                dot not in rejected
                and event.target_replica == event.replica
                and event.target_seq < event.seq
                and target is not None
            )
            if ok and target.remaining:
                side = book[target.event.side]
                del side[bisect_left(side, (_key(target.event), target))]
                target.remaining = 0
            continue
        order = RefOrder(event)
        orders[dot] = order
        if dot in rejected:
            order.rejected = True
            continue
        opposite = book["sell" if event.side == BUY else BUY]
        # The side is in priority order, so the crossing orders are a prefix of it;
        # take just enough of that prefix to fill the order (all of it if too little).
        crossing, available = [], 0
        for entry in opposite:
            if available >= event.qty or not _crosses(event, entry[1].event.price):
                break
            crossing.append(entry)
            available += entry[1].remaining
        if event.type == POST_ONLY and crossing:
            order.rejected = True
            continue
        if event.type == FOK and available < event.qty:
            order.rejected = True
            continue
        left = event.qty
        for entry in crossing:
            if left == 0:
                break
            maker = entry[1]
            qty = min(left, maker.remaining)
            maker.remaining -= qty
            maker.filled += qty
            left -= qty
            fills.append((dot, (maker.event.replica, maker.event.seq), maker.event.price, qty))
            if maker.remaining == 0:
                del opposite[0]  # the best order is always the first
        order.filled = event.qty - left
        if left and event.type in (LIMIT, POST_ONLY):
            order.remaining = left
            insort(book[event.side], (_key(event), order))
    statuses = {}
    for dot, order in orders.items():
        if order.rejected:
            status = "rejected"
        elif order.remaining:
            status = "open"
        elif order.filled == order.event.qty:
            status = "filled"
        else:
            status = "cancelled"
        statuses[dot] = (order.filled, order.remaining, status)
    reasons = {dot: o.cancel_reason for dot, o in orders.items() if o.cancel_reason}
    return fills, statuses, (_levels(book[BUY]), _levels(book["sell"])), reasons


def _key(event):
    """Priority on its side: best price first, then earliest position."""
    return (-event.price if event.side == BUY else event.price, event)


def _crosses(taker, price):
    if taker.type == MARKET:
        return True
    return price <= taker.price if taker.side == BUY else price >= taker.price


def _levels(side):
    levels = []
    for _, order in side:
        price = order.event.price
        if levels and levels[-1][0] == price:
            levels[-1] = (price, levels[-1][1] + order.remaining, levels[-1][2] + 1)
        else:
            levels.append((price, order.remaining, 1))
    return levels
