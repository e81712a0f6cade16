"""Workloads: sequences of steps played on several in-process replicas.

A ``Step`` says which replica acts, what it does, how much simulated time
passes first and how many of the deltas waiting for it are delivered before
it acts. Playing steps yields every delta created, in creation order, plus
the replicas as they stand (each has seen only part of the others' events,
so their clocks interleave the way concurrent nodes' do).

Besides honest orders and cancels, two actions forge events a correct node
never makes, to exercise deterministic rejection:

* ``forge_cancel``: a cancel of another replica's order;
* ``stale_clock``: an event whose clock does not exceed its predecessor's.

Used by the fuzzer and, through hypothesis strategies, by the tests.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from crdtbook.aworset import AWORSet
from crdtbook.events import make_cancel, make_order
from crdtbook.replica import Replica, ReplicaError

ORDER_TYPES = ("limit", "market", "ioc", "fok", "post_only")
ACTIONS = ORDER_TYPES + ("cancel", "forge_cancel", "stale_clock")
UNIT = 10**8


class Step(NamedTuple):
    replica: int
    action: str
    side: str
    qty: int  # whole units
    price: int  # whole units; also picks the cancel target
    deliver: int  # pending deltas delivered to the actor first
    dt: int  # simulated milliseconds that pass first


class Played(NamedTuple):
    replicas: list[Replica]
    deltas: list[AWORSet]


def replica_ids(count: int) -> list[str]:
    return [f"r{i}" for i in range(count)]


def play(count: int, steps: list[Step], skew: list[int] | None = None) -> Played:
    replicas = [Replica(name) for name in replica_ids(count)]
    skew = skew or [0] * count
    inbox: list[list[AWORSet]] = [[] for _ in range(count)]
    own_orders: list[list[str]] = [[] for _ in range(count)]
    deltas: list[AWORSet] = []
    now = 1_000
    for step in steps:
        actor = replicas[step.replica]
        waiting = inbox[step.replica]
        for delta in waiting[: step.deliver]:
            actor.merge(delta)
        del waiting[: step.deliver]
        now += step.dt
        delta = _act(actor, step, now + skew[step.replica], own_orders[step.replica], replicas)
        if delta is None:
            continue
        deltas.append(delta)
        for i in range(count):
            if i != step.replica:
                inbox[i].append(delta)
    return Played(replicas, deltas)


def _act(actor: Replica, step: Step, now: int, mine: list[str],
         replicas: list[Replica]) -> AWORSet | None:
    action = step.action
    if action in ORDER_TYPES:
        price = None if action == "market" else str(step.price)
        placed = actor.place(step.side, str(step.qty), price, action, now_ms=now)
        mine.append(str(placed.order.dot))
        return placed.delta
    if action == "cancel":
        if not mine:
            return None
        try:
            return actor.cancel(mine[step.price % len(mine)], now_ms=now).delta
        except ReplicaError:
            return None
    seq = actor.state.context.contiguous(actor.id) + 1
    if action == "forge_cancel":
        others = [r for r in replicas if r is not actor and r.state.context.contiguous(r.id)]
        if not others:
            return None
        victim = others[step.price % len(others)]
        event = make_cancel(actor.clock.tick(now), actor.id, seq, victim.id, 1)
    else:  # stale_clock: at or below the previous event of this replica
        prev = actor.state.get(actor.id, seq - 1)
        clock = prev.clock if prev is not None else actor.clock.tick(now)
        event = make_order(clock, actor.id, seq, step.side, "limit",
                           step.price * UNIT, step.qty * UNIT, "")
    actor._merge_one(event)  # as if the actor's own node had minted it
    return AWORSet.from_entries([(actor.id, seq, event)])


def random_steps(rng: random.Random, count: int, length: int, *, forged: float = 0.004,
                 cancels: float = 0.15) -> list[Step]:
    """A seeded workload: mostly limit orders around a mid of 100, some of every kind."""
    steps = []
    for _ in range(length):
        roll = rng.random()
        if roll < forged:
            action = "stale_clock" if rng.random() < 0.25 else "forge_cancel"
        elif roll < forged + cancels:
            action = "cancel"
        else:
            action = rng.choices(ORDER_TYPES, weights=(70, 5, 10, 8, 7))[0]
        steps.append(Step(
            replica=rng.randrange(count),
            action=action,
            side=rng.choice(("buy", "sell")),
            qty=rng.randint(1, 10),
            price=rng.randint(95, 105),
            deliver=rng.randrange(4),
            dt=rng.choice((0, 1, 1, 2, 5, 20)),
        ))
    return steps
