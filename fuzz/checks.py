"""What a run must satisfy at quiescence (ARCHITECTURE.md, "Invariants")."""

from __future__ import annotations

from crdtbook.codec import decode_delta, encode_delta
from tests.helpers import assert_invariants, assert_matches_reference, observable

from .sim import Schedule, Sim


def run_and_check(schedule: Schedule) -> Sim:
    """Execute ``schedule``, quiesce, check everything; raise AssertionError on a violation."""
    sim = Sim(schedule)
    sim.run()
    sim.quiesce()
    replicas = sim.replicas
    first = observable(replicas[0])
    for replica in replicas[1:]:
        assert observable(replica) == first, f"{replica.id} diverged from {replicas[0].id}"
    assert_matches_reference(replicas[0])
    for replica in replicas:
        assert_invariants(replica)
    # Idempotence: everything again, as one delta, changes nothing.
    again = decode_delta(encode_delta(replicas[-1].snapshot()))
    assert replicas[0].merge(again) == 0 and observable(replicas[0]) == first, \
        "a duplicate delivery changed the state"
    return sim
