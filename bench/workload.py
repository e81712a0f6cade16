"""The cluster benches' order flow: the standard library only.

``bench/cluster.py`` and ``bench/orderentry.py`` send the same orders (a
mid price, buys a little under it and sells a little over, so that about a
third cross). This module imports nothing of the project, so a bench that
measures another revision's code can share it without loading this one.
"""

from __future__ import annotations

import random

MID = 100


def order_stream(rng: random.Random):
    """Endless order requests (the JSON a client posts), drawn from ``rng``."""
    while True:
        side = rng.choice(("buy", "sell"))
        offset = round(rng.gauss(0.1, 0.5), 2)
        price = MID - offset if side == "buy" else MID + offset
        yield {"side": side, "qty": str(rng.randint(1, 20)), "price": f"{max(price, 0.01):.2f}"}
