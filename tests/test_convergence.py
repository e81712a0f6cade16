"""Convergence: any delivery order, duplication and batching gives one result."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.aworset import AWORSet
from crdtbook.merging import ReplicaError
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


@settings(max_examples=40, deadline=None)
@given(workloads(max_replicas=4), st.data())
def test_merge_event_equals_merging_its_one_event_delta(workload, data):
    """The peer path's ``merge_event`` (no delta object) is ``merge`` of the one-event
    delta: same counts returned, same state, in any order, duplicates included."""
    count, steps, skew = workload
    played = play(count, steps, skew)
    events = [e for delta in played.deltas for _, _, e in delta.entries()]
    order = data.draw(st.permutations(range(len(events))), label="order")
    order += data.draw(st.lists(st.integers(0, max(0, len(events) - 1)), max_size=5)
                       if events else st.just([]), label="dup")
    via_delta, via_event = Replica("observer-a"), Replica("observer-b")
    for i in order:
        e = events[i]
        assert via_event.merge_event(e) == via_delta.merge(
            AWORSet.from_entries([(e.replica, e.seq, e)]))
    assert observable(via_event) == observable(via_delta)
    assert via_event.digest() == via_delta.digest()
    assert_matches_reference(via_event)


def test_merge_event_refuses_an_event_under_its_own_id_that_it_never_made():
    replica = Replica("alpha")
    placed = replica.place("buy", "1", "10", now_ms=1)
    before = (observable(replica), replica.digest())
    forged = placed.order.dot
    (event,) = [e for _, _, e in placed.delta.entries()]
    with pytest.raises(ReplicaError, match="did not create"):
        replica.merge_event(event._replace(seq=forged.seq + 1, clock=event.clock + 1))
    with pytest.raises(ReplicaError, match="did not create"):
        replica.merge_event(event._replace(qty=event.qty + 1))
    assert replica.merge_event(event) == 0  # its own event, as sent: a duplicate
    assert (observable(replica), replica.digest()) == before
