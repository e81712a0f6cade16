"""What a run must satisfy (docs/semantics.md, "Invariants"), during it and at quiescence.

Only *correct* replicas (slots not marked Byzantine) are checked. A convicted
equivocator or liar may retract fills that correct replicas reported final
(the documented cost of equivocation: replicas that took one version before
the proof reached them), but only from the position of its first event past
its conviction cut on; a forger can retract nothing.
"""

from __future__ import annotations

from crdtbook.aworset import AWORSet
from tests.helpers import assert_invariants
from tests.reference import replay_all

from .sim import Schedule, Sim


class FinalityWatch:
    """Every fill any correct replica ever reported final must stay, unchanged, everywhere.

    Fills come in taker position order and a fill is final when its taker's
    clock is at or below the replica's frontier, so each replica's final
    fills are a prefix of all its fills (numbered from the first ever, even
    once compaction has dropped the oldest). The watch keeps the longest final
    prefix seen anywhere and checks each replica's new final fills against it;
    a difference is recorded, and ``settle`` accepts only those a conviction
    explains.
    """

    def __init__(self) -> None:
        self.record: list[tuple] = []
        self.checked: dict[str, int] = {}  # replica id -> final fills already compared
        self.clocks: list[int] = []  # the taker clock of each recorded fill
        self.changed: list[tuple] = []  # (index, reported, its taker clock, now, its clock)
        self.convictions: dict[str, dict] = {}  # replica id -> its convictions last compared

    def __call__(self, sim: Sim, slot: int) -> None:
        if sim.correct(slot):
            self.compare(sim.replicas[slot])

    def compare(self, replica) -> None:
        convicted = replica.membership.convicted
        if self.convictions.get(replica.id) != convicted:
            # A conviction may change fills compared already (and the replica may
            # compact them away before quiescence): compare its whole window again now.
            self.convictions[replica.id] = dict(convicted)
            self.checked[replica.id] = 0
        count = replica.final_fill_count()
        base = replica.fills_base
        start = max(self.checked.get(replica.id, 0), base)
        if count <= start:
            return
        window = replica.fills()
        engine_fills = replica.engine.fills
        for index in range(start, count):
            fill = tuple(window[index - base])
            clock = engine_fills[index - base][0].event.clock
            if index < len(self.record):
                if self.record[index] != fill:
                    self.changed.append((index, self.record[index], self.clocks[index],
                                         fill, clock))
                    self.record[index], self.clocks[index] = fill, clock
            else:
                assert index == len(self.record), f"{replica.id} skipped final fills"
                self.record.append(fill)
                self.clocks.append(clock)
        self.checked[replica.id] = count

    def recheck(self, replica) -> None:
        """At quiescence: compare the replica's whole window again (a conviction may have
        changed fills it compared earlier), and drop recorded fills that no longer exist."""
        self.checked[replica.id] = 0
        self.compare(replica)
        total = replica.fills_base + len(replica.fills())
        for index in range(total, len(self.record)):
            self.changed.append((index, self.record[index], self.clocks[index], None,
                                 self.clocks[index]))
        del self.record[total:], self.clocks[total:]

    def settle(self, bound: int | None) -> None:
        """Every final fill that changed has its taker at or after clock ``bound`` (the
        first event a conviction rejected; None: there was none, so nothing may change)."""
        for index, reported, reported_clock, now, now_clock in self.changed:
            taker_clock = min(reported_clock, now_clock)
            assert bound is not None and taker_clock >= bound, (
                f"final fill #{index} changed: reported {reported}, now {now} "
                f"(first event rejected by a conviction at clock {bound})")


def observable(replica, convicted: dict[str, int]):
    """What users see, less the events past a conviction cut (rejected everywhere, and
    not every replica holds the same version of them)."""
    book = replica.book()

    def counts(order) -> bool:
        cut = convicted.get(order.dot.replica)
        return cut is None or order.dot.seq <= cut

    return (
        replica.digest(),
        [tuple(level) for level in book.bids],
        [tuple(level) for level in book.asks],
        [tuple(f) for f in replica.fills()],
        [tuple(o) for o in replica.orders() if counts(o)],
    )


def run_and_check(schedule: Schedule) -> Sim:
    """Execute ``schedule``, quiesce, check everything; raise AssertionError on a violation."""
    sim = Sim(schedule)
    watch = FinalityWatch()
    sim.observers.append(watch)
    sim.run()
    sim.quiesce()
    slots = [i for i in range(schedule.replicas) if sim.correct(i)]
    replicas = [sim.replicas[i] for i in slots]
    convicted = dict(replicas[0].membership.convicted)
    for replica in replicas:
        assert replica.membership.convicted == convicted, (
            f"{replica.id} convicted {replica.membership.convicted}, "
            f"{replicas[0].id} {convicted}")
    honest = {sim.replicas[i].id for i in slots}
    assert not honest & set(convicted), "a correct replica was convicted"
    # the first event any conviction rejected, over every version created
    rejected = [e.clock for e in sim.created
                if e.replica in convicted and e.seq > convicted[e.replica]]
    bound = min(rejected) if rejected else None
    retractions = 0
    for replica in replicas:
        watch.recheck(replica)
        assert replica.frontier_violations == 0, f"{replica.id}: an event arrived below F"
        assert replica.frontier_regressions == 0, f"{replica.id}: F wanted to move back"
        retractions += replica.conviction_retractions
        # liveness: once everyone has everything and the vanished are evicted,
        # the frontier passes every event
        total = replica.fills_base + len(replica.fills())
        assert replica.final_fill_count() == total, (
            f"{replica.id}: only {replica.final_fill_count()} of {total} fills final at "
            f"quiescence (F={replica.frontier()}, members {replica.members()})"
        )
        assert_invariants(replica)
        for event in sim.forged:
            held = replica.state.get(event.replica, event.seq)
            assert held != event, f"{replica.id} holds a forged event {event}"
        replica.compact()  # everything is final now: compaction must not change a thing
    watch.settle(bound)
    assert retractions == 0 or bound is not None
    first = observable(replicas[0], convicted)
    for replica in replicas[1:]:
        assert observable(replica, convicted) == first, \
            f"{replica.id} diverged from {replicas[0].id}"
    # Sequential equivalence, on every event that made it into the set and counts.
    # (the version held: an equivocator's other one may never have reached anyone)
    index = sim.doors[slots[0]].index

    def version_held(e) -> bool:
        entry = index.block_holding(e.replica, e.seq)
        return entry is not None and e in entry.block.events

    held = sorted({e for e in sim.created if version_held(e)
                   and (e.replica not in convicted or e.seq <= convicted[e.replica])})
    fills, statuses, (bids, asks), reasons = replay_all(held)
    assert [(f[0], f[1], f[2], f[3]) for f in watch.record] == \
        [(tuple(t), tuple(m), p, q) for t, m, p, q in fills], "fills differ from the reference"
    book = replicas[0].book()
    assert [tuple(x) for x in book.bids] == bids and [tuple(x) for x in book.asks] == asks, \
        "book differs from the reference"
    for order in replicas[0].orders():
        cut = convicted.get(order.dot.replica)
        if order.status != "pending" and (cut is None or order.dot.seq <= cut):
            assert statuses[tuple(order.dot)] == (order.filled, order.resting, order.status), \
                f"order {order.dot} differs from the reference"
            if order.status == "cancelled":
                assert order.reason == reasons.get(tuple(order.dot)), \
                    f"order {order.dot}: cancel reason differs from the reference"
    # Idempotence: every event delivered again changes nothing.
    for event in held:
        assert replicas[0].merge(AWORSet.from_entries([(event.replica, event.seq, event)])) \
            == 0
    assert observable(replicas[0], convicted) == first, "a duplicate delivery changed the state"
    return sim
