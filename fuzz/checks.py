"""What a run must satisfy (ARCHITECTURE.md, "Invariants"), during it and at quiescence."""

from __future__ import annotations

from crdtbook.aworset import AWORSet
from tests.helpers import assert_invariants, observable
from tests.reference import replay_all

from .sim import Schedule, Sim


class FinalityWatch:
    """Every fill any replica ever reported final must stay, unchanged, everywhere.

    Fills come in taker position order and a fill is final when its taker's
    clock is at or below the replica's frontier, so each replica's final
    fills are a prefix of all its fills (numbered from the first ever, even
    once compaction has dropped the oldest). The watch keeps the longest final
    prefix seen anywhere and checks each replica's new final fills against it.
    """

    def __init__(self) -> None:
        self.record: list[tuple] = []
        self.checked: dict[str, int] = {}  # replica id -> final fills already compared

    def __call__(self, sim: Sim, slot: int) -> None:
        self.compare(sim.replicas[slot])

    def compare(self, replica) -> None:
        count = replica.final_fill_count()
        base = replica.fills_base
        start = max(self.checked.get(replica.id, 0), base)
        if count <= start:
            return
        window = replica.fills()
        for index in range(start, count):
            fill = tuple(window[index - base])
            if index < len(self.record):
                assert self.record[index] == fill, (
                    f"final fill #{index} differs: {replica.id} has {fill}, "
                    f"earlier reported {self.record[index]}"
                )
            else:
                assert index == len(self.record), f"{replica.id} skipped final fills"
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
    for replica in replicas:
        watch.compare(replica)
        assert replica.frontier_violations == 0, f"{replica.id}: an event arrived below F"
        assert replica.frontier_regressions == 0, f"{replica.id}: F wanted to move back"
        # liveness: once everyone has everything and the vanished are evicted,
        # the frontier passes every event
        total = replica.fills_base + len(replica.fills())
        assert replica.final_fill_count() == total, (
            f"{replica.id}: only {replica.final_fill_count()} of {total} fills final at "
            f"quiescence (F={replica.frontier()}, members {replica.members()})"
        )
        assert_invariants(replica)
        replica.compact()  # everything is final now: compaction must not change a thing
    first = observable(replicas[0])
    for replica in replicas[1:]:
        assert observable(replica) == first, f"{replica.id} diverged from {replicas[0].id}"
    # Sequential equivalence, on every event that made it into the set.
    cc = replicas[0].state.context
    held = sorted({e for e in sim.created if cc.has(e.replica, e.seq)})
    fills, statuses, (bids, asks), reasons = replay_all(held)
    assert [(f[0], f[1], f[2], f[3]) for f in watch.record] == \
        [(tuple(t), tuple(m), p, q) for t, m, p, q in fills], "fills differ from the reference"
    book = replicas[0].book()
    assert [tuple(x) for x in book.bids] == bids and [tuple(x) for x in book.asks] == asks, \
        "book differs from the reference"
    for order in replicas[0].orders():
        if order.status != "pending":
            assert statuses[tuple(order.dot)] == (order.filled, order.resting, order.status), \
                f"order {order.dot} differs from the reference"
            if order.status == "cancelled":
                assert order.reason == reasons.get(tuple(order.dot)), \
                    f"order {order.dot}: cancel reason differs from the reference"
    # Idempotence: every event delivered again changes nothing.
    for event in held:
        assert replicas[0].merge(AWORSet.from_entries([(event.replica, event.seq, event)])) \
            == 0
    assert observable(replicas[0]) == first, "a duplicate delivery changed the state"
    return sim
