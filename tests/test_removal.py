"""Removal deltas are refused by replicas until compaction exists, and change nothing.

The AWORSet supports observed-remove (tests/test_aworset.py); the replicated
event set will use it only to compact final history. Until then a removal can
only come from a faulty or forged peer, and accepting one would let replicas
judge an origin's clock chain against different predecessors.
"""

import random

import pytest

from crdtbook.aworset import AWORSet
from crdtbook.codec import decode_delta, encode_delta
from crdtbook.replica import Replica, ReplicaError
from fuzz.workload import play, random_steps

from .helpers import observable


def removal(dots):
    delta = AWORSet()
    for replica, seq in dots:
        delta.context.add(replica, seq)
    return delta


@pytest.mark.parametrize("seed", range(3))
def test_removal_refused_and_nothing_changes(seed):
    rng = random.Random(seed)
    played = play(3, random_steps(rng, 3, 80), [0, 4, 9])
    replica = Replica("x")
    for delta in played.deltas:
        replica.merge(delta)
    before = observable(replica)
    victims = rng.sample([tuple(e.dot) for e in replica.events()], 3)
    for delta in (removal(victims), removal([("never", 2**63 - 1)])):
        with pytest.raises(ReplicaError, match="removal"):
            replica.merge(decode_delta(encode_delta(delta)))
    assert observable(replica) == before


def test_a_delta_claiming_more_than_it_carries_is_refused():
    a = Replica("a")
    placed = a.place("sell", "1", "10", now_ms=1)
    padded = placed.delta.copy()
    padded.context.add("a", 2)  # claims a:2 without carrying it
    b = Replica("b")
    with pytest.raises(ReplicaError, match="does not carry"):
        b.merge(padded)
    assert b.event_count() == 0 and b.context().size() == 0
