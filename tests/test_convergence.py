"""Convergence: any delivery order, duplication and batching gives one result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.aworset import AWORSet
from crdtbook.replica import Replica
from fuzz.workload import play

from .helpers import assert_invariants, assert_matches_reference, observable
from .strategies import workloads


def deliver(replica: Replica, deltas: list[AWORSet], order: list[int], dup: list[int],
            batch: int) -> None:
    """Feed deltas in ``order`` (plus duplicates), joined into batches of ``batch``."""
    sequence = [deltas[i] for i in order] + [deltas[i % len(deltas)] for i in dup]
    for start in range(0, len(sequence), batch):
        combined = AWORSet()
        for delta in sequence[start:start + batch]:
            combined.merge(delta)
        replica.merge(combined)


@settings(max_examples=60, deadline=None)
@given(workloads(), st.data())
def test_all_replicas_converge(workload, data):
    count, steps, skew = workload
    played = play(count, steps, skew)
    if not played.deltas:
        return
    n = len(played.deltas)
    for replica in played.replicas:
        order = data.draw(st.permutations(range(n)), label="order")
        dup = data.draw(st.lists(st.integers(0, n - 1), max_size=5), label="dup")
        batch = data.draw(st.integers(1, 8), label="batch")
        deliver(replica, played.deltas, order, dup, batch)
    first = observable(played.replicas[0])
    for replica in played.replicas[1:]:
        assert observable(replica) == first
    assert_matches_reference(played.replicas[0])
    assert_invariants(played.replicas[0])


@settings(max_examples=40, deadline=None)
@given(workloads(max_replicas=4), st.data())
def test_fresh_replica_gets_the_same_result_from_any_order(workload, data):
    count, steps, skew = workload
    played = play(count, steps, skew)
    n = len(played.deltas)
    reference = Replica("observer-a")
    for delta in played.deltas:
        reference.merge(delta)
    other = Replica("observer-b")
    for i in data.draw(st.permutations(range(n))):
        other.merge(played.deltas[i])
        other.merge(played.deltas[i])  # duplicates change nothing
    assert observable(other) == observable(reference)
    assert_matches_reference(other)


def test_full_state_join_equals_delta_by_delta():
    played = play(3, _fixed_steps(), [0, 3, 7])
    via_deltas = Replica("x")
    for delta in played.deltas:
        via_deltas.merge(delta)
    via_state = Replica("y")
    for replica in played.replicas:
        via_state.merge(replica.snapshot())
    assert observable(via_state) == observable(via_deltas)


def _fixed_steps():
    import random

    from fuzz.workload import random_steps

    return random_steps(random.Random(7), 3, 200)
