"""An in-process demonstration of the core: three replicas, one exchange.

Until the networked node lands, ``crdtbook devnet --demo`` (and ``make run``)
shows the idea on replicas in one process: crossing orders are placed at
different replicas, the deltas are delivered to each replica in a different
order, and every replica ends with the same book, fills and digest.
"""

from __future__ import annotations

import random

from crdtbook.amount import format_amount
from crdtbook.replica import Replica

SCRIPT = [  # (replica, side, qty, price)
    ("alpha", "sell", "3", "12"),
    ("bravo", "sell", "2", "12.5"),
    ("charlie", "buy", "2", "13"),
    ("alpha", "buy", "1", "11"),
    ("bravo", "buy", "4", "12.5"),
    ("charlie", "sell", "1", "10"),
]


def run(out=print) -> bool:
    replicas = {name: Replica(name) for name in ("alpha", "bravo", "charlie")}
    deltas = []
    for now, (name, side, qty, price) in enumerate(SCRIPT, start=1_000):
        placed = replicas[name].place(side, qty, price, now_ms=now)
        deltas.append(placed.delta)
        out(f"{name:>8} places {side} {qty}@{price}")
    rng = random.Random(7)
    for replica in replicas.values():
        order = list(deltas)
        rng.shuffle(order)  # every replica hears about the orders in its own order
        for delta in order:
            replica.merge(delta)
    for name, replica in replicas.items():
        book = replica.book()
        bids = " ".join(f"{format_amount(q)}@{format_amount(p)}" for p, q, _ in book.bids)
        asks = " ".join(f"{format_amount(q)}@{format_amount(p)}" for p, q, _ in book.asks)
        fills = ", ".join(f"{format_amount(f.qty)}@{format_amount(f.price)}"
                          for f in replica.fills())
        out(f"{name:>8}: bids [{bids}] asks [{asks}] fills [{fills}] "
            f"digest {replica.digest()[:12]}")
    agree = len({r.digest() for r in replicas.values()}) == 1
    out("all replicas agree" if agree else "REPLICAS DISAGREE")
    return agree
