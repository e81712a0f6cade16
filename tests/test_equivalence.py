"""Sequential equivalence with the reference engine, including late arrivals."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.replica import Replica
from fuzz.workload import play, random_steps

from .helpers import assert_invariants, assert_matches_reference
from .strategies import workloads


@settings(max_examples=80, deadline=None)
@given(workloads(max_size=80))
def test_every_replica_matches_reference_on_what_it_holds(workload):
    """Mid-run, each replica has a partial, out-of-order view; still equal to replay."""
    count, steps, skew = workload
    played = play(count, steps, skew)
    for replica in played.replicas:
        assert_matches_reference(replica)
        assert_invariants(replica)


@settings(max_examples=40, deadline=None)
@given(workloads(max_replicas=5, max_size=80), st.randoms(use_true_random=False))
def test_late_arrivals_rewind_correctly(workload, rnd):
    count, steps, skew = workload
    played = play(count, steps, skew)
    deltas = list(played.deltas)
    # Deliver mostly in creation order, but hold some back for a while.
    held = []
    replica = Replica("late")
    for delta in deltas:
        if rnd.random() < 0.3:
            held.append(delta)
        else:
            replica.merge(delta)
        if held and rnd.random() < 0.2:
            replica.merge(held.pop(rnd.randrange(len(held))))
        assert_invariants(replica)
    for delta in held:
        replica.merge(delta)
    assert_matches_reference(replica)


@pytest.mark.parametrize("seed", range(4))
def test_long_seeded_workloads_match_reference(seed):
    rng = random.Random(seed)
    played = play(4, random_steps(rng, 4, 600), [0, 5, 11, 2])
    fresh = Replica("fresh")
    order = list(range(len(played.deltas)))
    rng.shuffle(order)
    for i in order:
        fresh.merge(played.deltas[i])
    assert_matches_reference(fresh)
    assert_invariants(fresh)
    assert fresh.engine.replayed > 0  # the shuffle really made it rewind
