"""Removal deltas (the mechanism compaction will use) converge like any other."""

import random

import pytest

from crdtbook.aworset import AWORSet
from crdtbook.replica import Replica
from fuzz.workload import play, random_steps

from .helpers import assert_invariants, observable


def removal(dots):
    delta = AWORSet()
    for replica, seq in dots:
        delta.context.add(replica, seq)
    return delta


@pytest.mark.parametrize("seed", range(5))
def test_removals_in_any_order_converge(seed):
    rng = random.Random(seed)
    played = play(3, random_steps(rng, 3, 150), [0, 4, 9])
    source = Replica("src")
    for delta in played.deltas:
        source.merge(delta)
    victims = rng.sample([tuple(e.dot) for e in source.events()], 10)
    removals = [removal([dot]) for dot in victims]
    results = []
    for name in ("x", "y", "z"):
        replica = Replica(name)
        stream = played.deltas + removals
        rng.shuffle(stream)
        for delta in stream:
            replica.merge(delta)
        assert_invariants(replica)
        results.append(observable(replica))
        held = {tuple(e.dot) for e in replica.events()}
        assert not held & set(victims)  # removed, and never resurrected
    assert results[0] == results[1] == results[2]


def test_removing_an_applied_maker_rewinds_its_fills():
    a, b = Replica("a"), Replica("b")
    sell = a.place("sell", "1", "10", now_ms=1)
    b.merge(sell.delta)
    buy = b.place("buy", "1", "10", now_ms=2)
    assert len(b.fills()) == 1
    b.merge(removal([("a", 1)]))
    assert b.fills() == [] and b.order("b:1").status == "open"
    b.merge(sell.delta)  # the removed event does not come back
    assert b.fills() == [] and b.order("a:1") is None
    assert buy.order.status == "filled"  # what b reported then (provisional)
