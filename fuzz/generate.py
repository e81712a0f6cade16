"""Seeded schedules: a random but reproducible mix of trading and network chaos."""

from __future__ import annotations

import random

from .sim import KINDS, Schedule

ORDER_TYPES = ("limit", "market", "ioc", "fok", "post_only")
# (action, weight): trading and delivery dominate; chaos is rarer but always present.
WEIGHTS = (
    ("place", 34), ("cancel", 5), ("time", 10), ("deliver", 30), ("pull", 7),
    ("dup", 3), ("drop", 3), ("hold", 3), ("partition", 1), ("heal", 1), ("restart", 1),
    ("leave", 1), ("evict", 1), ("compact", 4),
)


BYZANTINE_ACTIONS = {"forger": "forge", "liar": "lie", "equivocator": "equivocate"}


def schedule(seed: int, replicas: int, events: int) -> Schedule:
    """About ``events`` trading events (orders and cancels) and the chaos around them.

    Every other seed with three or more slots has Byzantine slots (one, or
    two from five slots on; never slot 0), each of a kind drawn from KINDS,
    acting about once in fifty actions."""
    rng = random.Random(seed)
    offsets = tuple(rng.randint(-40, 40) for _ in range(replicas))
    byzantine: tuple = ()
    if replicas >= 3 and seed % 2:
        count = 1 if replicas < 5 else 2
        slots = sorted(rng.sample(range(1, replicas), count))
        byzantine = tuple((slot, rng.choice(KINDS)) for slot in slots)
    names = [name for name, _ in WEIGHTS]
    weights = [weight for _, weight in WEIGHTS]
    actions: list[tuple] = []
    made = 0
    while made < events:
        if byzantine and rng.random() < 0.02:
            slot, kind = rng.choice(byzantine)
            action = BYZANTINE_ACTIONS[kind]
            actions.append((action, slot) if action == "lie" else (action, slot,
                                                                  rng.randrange(1000)))
            continue
        kind = rng.choices(names, weights)[0]
        slot = rng.randrange(replicas)
        if kind == "place":
            made += 1
            order_type = rng.choices(ORDER_TYPES, (70, 5, 10, 8, 7))[0]
            actions.append(("place", slot, order_type, rng.choice(("buy", "sell")),
                            rng.randint(1, 10), rng.randint(95, 105)))
        elif kind == "cancel":
            made += 1
            actions.append(("cancel", slot, rng.randrange(1000)))
        elif kind == "time":
            actions.append(("time", rng.choice((1, 2, 5, 20, 100))))
        elif kind in ("deliver", "dup", "drop"):
            actions.append((kind, rng.randrange(1000)))
        elif kind == "pull":
            actions.append(("pull", slot, rng.randrange(replicas)))
        elif kind == "hold":
            actions.append(("hold", rng.randrange(1000), rng.randint(5, 200)))
        elif kind == "partition":
            slots = list(range(replicas))
            rng.shuffle(slots)
            cut = rng.randint(1, max(1, replicas - 1))
            actions.append(("partition", (tuple(sorted(slots[:cut])), tuple(sorted(slots[cut:])))))
        elif kind == "heal":
            actions.append(("heal",))
        elif kind == "evict":
            actions.append(("evict", slot, rng.randrange(1000)))
        else:
            actions.append((kind, slot))  # restart, leave, compact
    return Schedule(replicas, offsets, tuple(actions), byzantine)
