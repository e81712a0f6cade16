"""What a run must satisfy (ARCHITECTURE.md, "Invariants"), during it and at quiescence."""

from __future__ import annotations

from crdtbook.codec import decode_delta, encode_delta
from tests.helpers import assert_invariants, assert_matches_reference, observable

from .sim import Schedule, Sim


class FinalityWatch:
    """Every fill any replica ever reported final must stay, unchanged, everywhere.

    Fills come in taker position order and a fill is final when its taker's
    clock is at or below the replica's frontier, so each replica's final
    fills are a prefix of its fills. The watch keeps the longest final prefix
    seen anywhere and checks each replica's (new) final fills against it.
    """

    def __init__(self) -> None:
        self.record: list[tuple] = []
        self.checked: dict[str, int] = {}  # replica id -> final fills already compared

    def __call__(self, sim: Sim, slot: int) -> None:
        self.compare(sim.replicas[slot], full=False)

    def compare(self, replica, full: bool) -> None:
        count = replica.final_fill_count()
        start = 0 if full else min(self.checked.get(replica.id, 0), count)
        if count <= start:
            return
        fills = [tuple(f) for f in replica.fills()[start:count]]
        for offset, fill in enumerate(fills):
            index = start + offset
            if index < len(self.record):
                assert self.record[index] == fill, (
                    f"final fill #{index} differs: {replica.id} has {fill}, "
                    f"earlier reported {self.record[index]}"
                )
            else:
                self.record.append(fill)
        self.checked[replica.id] = count


def run_and_check(schedule: Schedule) -> Sim:
    """Execute ``schedule``, quiesce, check everything; raise AssertionError on a violation."""
    sim = Sim(schedule)
    watch = FinalityWatch()
    sim.observers.append(watch)
    sim.run()
    sim.quiesce()
    replicas = sim.replicas
    first = observable(replicas[0])
    for replica in replicas[1:]:
        assert observable(replica) == first, f"{replica.id} diverged from {replicas[0].id}"
    assert_matches_reference(replicas[0])
    for replica in replicas:
        assert_invariants(replica)
        assert replica.frontier_violations == 0, f"{replica.id}: an event arrived below F"
        assert replica.frontier_regressions == 0, f"{replica.id}: F wanted to move back"
        watch.compare(replica, full=True)
        # liveness: once everyone has everything and the vanished are evicted,
        # the frontier passes every event
        assert replica.final_fill_count() == len(replica.fills()), (
            f"{replica.id}: only {replica.final_fill_count()} of {len(replica.fills())} "
            f"fills final at quiescence (F={replica.frontier()}, members {replica.members()})"
        )
    assert len(watch.record) == len(replicas[0].fills())
    # Idempotence: everything again, as one delta, changes nothing.
    again = decode_delta(encode_delta(replicas[-1].snapshot()))
    assert replicas[0].merge(again) == 0 and observable(replicas[0]) == first, \
        "a duplicate delivery changed the state"
    return sim
