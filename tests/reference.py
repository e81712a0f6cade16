"""A deliberately simple reference engine, to check the real one against.

Plain lists, full sorts, no incremental state, no cleverness: given the set of
events a replica holds, compute which are admitted, then replay them in
position order on a book that is just a list of resting orders. If the real
engine and this one ever disagree, the real one is wrong.
"""

from __future__ import annotations

from crdtbook.events import BUY, CANCEL, FOK, LIMIT, MARKET, POST_ONLY


class RefOrder:
    def __init__(self, event):
        self.event = event
        self.remaining = 0
        self.filled = 0
        self.rejected = False


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
    return sorted(ready), rejected


def replay(events):
    """Return (fills, orders, book) for a set of events.

    fills:  list of (taker dot, maker dot, price, qty) in replay order
    orders: {dot: (filled, resting, status)}
    book:   (bids, asks), each a list of (price, total qty, order count), best first
    """
    ready, rejected = admitted(events)
    resting = []  # RefOrder, in the order they came to rest
    orders = {}
    fills = []
    for event in ready:
        dot = (event.replica, event.seq)
        if event.kind == CANCEL:
            target = orders.get((event.target_replica, event.target_seq))
            ok = (
                dot not in rejected
                and event.target_replica == event.replica
                and event.target_seq < event.seq
                and target is not None
            )
            if ok and target in resting:
                resting.remove(target)
                target.remaining = 0
            continue
        order = RefOrder(event)
        orders[dot] = order
        if dot in rejected:
            order.rejected = True
            continue
        is_buy = event.side == BUY

        def crosses(price, event=event, is_buy=is_buy):
            if event.type == MARKET:
                return True
            return price <= event.price if is_buy else price >= event.price

        makers = [o for o in resting if (o.event.side == BUY) != is_buy and crosses(o.event.price)]
        makers.sort(key=lambda o: ((o.event.price if is_buy else -o.event.price), o.event))
        if event.type == POST_ONLY and makers:
            order.rejected = True
            continue
        if event.type == FOK and sum(o.remaining for o in makers) < event.qty:
            order.rejected = True
            continue
        left = event.qty
        for maker in makers:
            if left == 0:
                break
            qty = min(left, maker.remaining)
            maker.remaining -= qty
            maker.filled += qty
            left -= qty
            fills.append(((event.replica, event.seq), (maker.event.replica, maker.event.seq),
                          maker.event.price, qty))
            if maker.remaining == 0:
                resting.remove(maker)
        order.filled = event.qty - left
        if left and event.type in (LIMIT, POST_ONLY):
            order.remaining = left
            resting.append(order)
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
    return fills, statuses, (_levels(resting, BUY), _levels(resting, "sell"))


def _levels(resting, side):
    prices = sorted({o.event.price for o in resting if o.event.side == side},
                    reverse=(side == BUY))
    return [
        (p, sum(o.remaining for o in resting if o.event.side == side and o.event.price == p),
         sum(1 for o in resting if o.event.side == side and o.event.price == p))
        for p in prices
    ]
