"""The bulk paths against the one-at-a-time paths they stand for.

* ``Engine.apply_run`` (a run of events in one loop) against ``Engine.apply``
  called per event: the same fills, outcomes and book, record for record.
* ``Replica.merge_event`` (its in-order branch written out) against ``merge``
  of a one-event delta (``_merge_one``): the same state, field for field, in
  position order, shuffled, and with events re-delivered.
* A replica fed one delta of everything (``merge``, the replay of a pull
  answer or a restart) against one fed each event alone in position order
  (``merge_event``) and one fed them shuffled: the same digest, fills,
  orders and book, and all equal to the reference engine.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.aworset import AWORSet
from crdtbook.book import Resting
from crdtbook.codec import decode_delta, encode_delta
from crdtbook.engine import CancelOutcome, Engine
from crdtbook.merging import ReplicaError
from crdtbook.replica import Replica
from fuzz.workload import play, random_steps

from .helpers import assert_matches_reference, observable
from .strategies import workloads


def everything(played) -> Replica:
    whole = Replica("whole")
    for delta in played.deltas:
        whole.merge(delta)
    return whole


def record(outcome) -> tuple:
    if isinstance(outcome, Resting):
        return ("order", outcome.event, outcome.remaining, outcome.filled, outcome.reason,
                outcome.cancel_reason, outcome.fills_start)
    if isinstance(outcome, CancelOutcome):
        target = None if outcome.target is None else outcome.target.event
        return ("cancel", outcome.event, target, outcome.removed, outcome.index, outcome.reason)
    return ("member", outcome.event, outcome.reason,
            [(o.event, q, i) for o, q, i in outcome.cancelled])


def engine_state(engine: Engine) -> tuple:
    def side(book):
        return [(price, [o.event for o in book.levels[price]]) for price in book.prices]

    return (
        list(engine.log),
        [(t.event, m.event, price, qty) for t, m, price, qty in engine.fills],
        sorted((r, s, record(o)) for r, seqs in engine.by_dot.items() for s, o in seqs.items()),
        side(engine.bids), side(engine.asks), engine.bids.best, engine.asks.best,
    )


@settings(max_examples=60, deadline=None)
@given(workloads(max_size=120))
def test_apply_run_is_apply_per_event(workload):
    count, steps, skew = workload
    log = everything(play(count, steps, skew)).engine
    one, run = Engine(), Engine()
    for engine in (one, run):
        engine.invalid = {r: dict(marks) for r, marks in log.invalid.items()}
    for event in log.log:
        one.apply(event)
    run.apply_run(list(log.log))
    assert engine_state(one) == engine_state(run) == engine_state(log)


@settings(max_examples=60, deadline=None)
@given(workloads(max_size=120), st.randoms(use_true_random=False))
def test_one_delta_of_everything_is_each_event_alone(workload, rnd):
    count, steps, skew = workload
    played = play(count, steps, skew)
    whole = everything(played)
    events = whole.events()
    replayed = Replica("replay")
    replayed.merge(decode_delta(encode_delta(whole.snapshot())))
    alone = Replica("alone")
    for event in events:
        alone.merge_event(event)
    shuffled = Replica("shuffled")
    for i in rnd.sample(range(len(events)), len(events)):
        shuffled.merge(AWORSet.from_entries([(events[i].replica, events[i].seq, events[i])]))
    assert observable(replayed) == observable(alone) == observable(shuffled) \
        == observable(whole)
    assert_matches_reference(replayed)


def test_a_long_seeded_replay_is_each_event_alone():
    rng = random.Random(7)
    whole = everything(play(4, random_steps(rng, 4, 1500), [0, 3, 9, 1]))
    replayed = Replica("replay")
    replayed.merge(decode_delta(encode_delta(whole.snapshot())))
    alone = Replica("alone")
    for event in whole.events():
        alone.merge_event(event)
    assert observable(replayed) == observable(alone)
    assert_matches_reference(replayed)


def replica_state(replica: Replica) -> tuple:
    """What merging keeps, beyond what a user sees."""
    return (
        replica.digest(),  # first: it hashes what is pending (_unhashed)
        replica.state.store, replica.state.context, replica.clock.last,
        sorted(replica._unhashed), replica._events_total, replica._chain_clock,
        replica._poisoned, {r: dict(m) for r, m in replica.engine.invalid.items()},
        replica.frontier_violations, engine_state(replica.engine),
    )


@settings(max_examples=60, deadline=None)
@given(workloads(max_size=120), st.randoms(use_true_random=False))
def test_merge_event_is_merge_of_its_delta(workload, rnd):
    count, steps, skew = workload
    events = everything(play(count, steps, skew)).events()
    late = list(events)
    rnd.shuffle(late)
    for order in (events, late, events + late[: len(late) // 3]):
        by_event, by_delta = Replica("by-event"), Replica("by-delta")
        returned = []
        for event in order:
            returned.append((by_event.merge_event(event),
                             by_delta.merge(AWORSet.from_entries([(event.replica, event.seq,
                                                                   event)]))))
            assert returned[-1][0] == returned[-1][1]
        assert replica_state(by_event) == replica_state(by_delta)


def test_merge_event_refuses_an_event_under_its_own_id():
    own = Replica("r0")
    own.place("buy", "1", "1", "limit", "", 1_000)
    made = own.events()[0]
    before = replica_state(own)
    for forged in (made._replace(qty=made.qty + 1), made._replace(seq=2, clock=made.clock + 1)):
        with pytest.raises(ReplicaError):
            own.merge_event(forged)
        assert replica_state(own) == before
    assert own.merge_event(made) == 0  # its own event, delivered back: nothing new


def test_one_delta_with_tied_and_falling_clocks_is_in_position_order():
    """The merge of a delta sorts what it admits by clock alone (it arrives in dot
    order): equal clocks across replicas, and a replica whose clock falls along
    its seqs (rejected, but in the log at its position), still land in position order."""
    from crdtbook.events import make_cancel, make_order

    rng = random.Random(3)
    events = []
    for name in ("a", "b", "c", "d"):
        clocks = sorted(rng.sample(range(1, 40), 12))
        if name == "c":
            clocks[5], clocks[8] = clocks[8], clocks[5]  # a falling clock mid-chain
        for seq, clock in enumerate(clocks, start=1):
            if seq > 2 and rng.random() < 0.2:
                events.append(make_cancel(clock, name, seq, name, rng.randrange(1, seq)))
            else:
                events.append(make_order(clock, name, seq, rng.choice(("buy", "sell")), "limit",
                                         rng.randrange(95, 106), rng.randrange(1, 5), ""))
    assert len({e.clock for e in events}) < len(events)  # ties across replicas
    whole = Replica("whole")
    whole.merge(AWORSet.from_entries((e.replica, e.seq, e) for e in events))
    assert whole.engine.log == sorted(events)
    alone = Replica("alone")
    for event in sorted(events):
        alone.merge_event(event)
    assert replica_state(whole) == replica_state(alone)
    assert observable(whole) == observable(alone)
    assert_matches_reference(whole)


@settings(max_examples=60, deadline=None)
@given(workloads(max_size=120), st.randoms(use_true_random=False))
def test_the_in_order_paths_keep_position_order_beside_local_orders(workload, rnd):
    """The in-order paths append an event whose clock is past every clock held
    without comparing it with the engine's last (merging.py's rules): peers'
    events in any order that keeps each origin's seqs, the replica's own orders
    and cancels between them (ticks right after the latest clock, so ties with
    peers' clocks), by ``merge_event`` and by one-event deltas alike: the log
    is in position order and the engine is the one a single merge of the same
    events builds (the general path, which sorts)."""
    count, steps, skew = workload
    events = everything(play(count, steps, skew)).events()
    queues: dict[str, list] = {}
    for event in events:
        queues.setdefault(event.replica, []).append(event)
    for by_event in (True, False):
        own = Replica("own")
        waiting = {r: list(q) for r, q in queues.items()}
        placed = []
        while waiting:
            if rnd.random() < 0.3:
                if placed and rnd.random() < 0.3:
                    own.cancel(rnd.choice(placed), 0)
                else:
                    side = rnd.choice(("buy", "sell"))
                    made = own.place(side, str(rnd.randint(1, 5)), str(rnd.randint(95, 105)),
                                     "limit", "", 0)
                    placed.append(made.order.dot)
            origin = rnd.choice(sorted(waiting))
            event = waiting[origin].pop(0)
            if not waiting[origin]:
                del waiting[origin]
            if by_event:
                own.merge_event(event)
            else:
                own.merge(AWORSet.from_entries([(event.replica, event.seq, event)]))
        held = own.events()
        assert all(e.clock <= own.clock.last for e in own.engine.log)
        assert own.engine.log == sorted(own.engine.log)
        whole = Replica("whole")
        whole.merge(AWORSet.from_entries((e.replica, e.seq, e) for e in held))
        assert engine_state(own.engine) == engine_state(whole.engine)
        assert observable(own) == observable(whole)


def replay_variants(events: list, rnd: random.Random) -> list[AWORSet]:
    """Deltas to replay into a new replica: the whole set, a prefix of every
    origin (both runs, the fast way), a random subset (gaps: the general way),
    and the whole set with an origin's seqs filed out of order (the general way)."""
    whole = AWORSet.from_entries((e.replica, e.seq, e) for e in events)
    cut = {r: rnd.randint(0, len(seqs)) for r, seqs in whole.store.items()}
    prefix = AWORSet.from_entries((e.replica, e.seq, e) for e in events if e.seq <= cut[e.replica])
    subset = AWORSet.from_entries((e.replica, e.seq, e) for e in events if rnd.random() < 0.7)
    shuffled = AWORSet.from_entries((e.replica, e.seq, e) for e in rnd.sample(events, len(events)))
    return [decode_delta(encode_delta(whole)), whole, prefix, subset, shuffled]


def replayed_both_ways(delta: AWORSet, final: int = 0) -> tuple[Replica, Replica, bool]:
    """``delta`` merged into a new replica (the fast way when it fits), and by the
    general path; whether the fast way took it."""
    fast, general = Replica("fast", track_fresh=True), Replica("general", track_fresh=True)
    fast._final = general._final = final
    took = fast._merge_into_empty(delta) is not None
    fast = Replica("fast", track_fresh=True)
    fast._final = final
    count = fast.merge(delta)
    general._refuse(delta)
    assert count == general._merge_general(delta, additive=True)
    return fast, general, took


@settings(max_examples=80, deadline=None)
@given(workloads(max_size=120), st.randoms(use_true_random=False))
def test_a_replay_into_a_new_replica_is_the_general_merge(workload, rnd):
    """``_merge_into_empty`` (a replay: one delta into a replica holding nothing)
    against the general path: the same replica field for field, what it hands
    the store (``take_fresh``, in the same order), the engine record for record;
    and it declines whatever it is not sure of (gaps, an origin's seqs out of
    order, a clock falling along an origin's seqs, a clock at or below F)."""
    count, steps, skew = workload
    events = everything(play(count, steps, skew)).events()
    for delta in replay_variants(events, rnd):
        final = rnd.choice(events).clock if events and rnd.random() < 0.3 else 0
        fast, general, took = replayed_both_ways(delta, final)
        assert replica_state(fast) == replica_state(general)
        assert fast.take_fresh() == general.take_fresh()
        assert fast.membership.cutoff == general.membership.cutoff
        assert observable(fast) == observable(general)
        if delta.context.cloud:
            assert not took
        falling = any(seqs[s].clock >= seqs[s + 1].clock for seqs in delta.store.values()
                      for s in seqs if s + 1 in seqs)
        if falling or (final and any(e.clock <= final for _, _, e in delta.entries())):
            assert not took


def test_a_replay_takes_the_fast_way_and_declines_membership_events():
    """The whole set of a seeded run takes the fast way; the same with a join in
    it takes the general way; both equal to the general path."""
    from crdtbook.events import make_member

    rng = random.Random(11)
    whole = everything(play(3, random_steps(rng, 3, 400), [0, 5, 2]))
    delta = decode_delta(encode_delta(whole.snapshot()))
    fast, general, took = replayed_both_ways(delta)
    assert took and len(fast.engine.log) == len(whole.events())
    assert replica_state(fast) == replica_state(general) and observable(fast) == observable(whole)
    origin = sorted(delta.store)[0]
    seqs = delta.store[origin]
    last = seqs[max(seqs)]
    join = make_member(last.clock + 1, origin, last.seq + 1, "join", "z" * 32, 0)
    joined = AWORSet.from_entries([*delta.entries(), (origin, join.seq, join)])
    fast, general, took = replayed_both_ways(joined)
    assert not took
    assert replica_state(fast) == replica_state(general)


def test_a_replay_declines_an_origin_filed_out_of_seq_order():
    """An origin whose clock falls along its seqs, filed in clock order (so its
    clocks rise in the order of the store): the fast way must read the seqs,
    not the store's order, and decline it; the general path rejects seq 2 on."""
    from crdtbook.events import make_order

    a = [make_order(clock, "a", seq, "buy", "limit", 10, 1, "")
         for seq, clock in ((1, 20), (2, 5), (3, 30))]
    b = make_order(25, "b", 1, "sell", "limit", 10, 1, "")
    delta = AWORSet.from_entries([("a", 2, a[1]), ("a", 1, a[0]), ("a", 3, a[2]), ("b", 1, b)])
    fast, general, took = replayed_both_ways(delta)
    assert not took
    assert replica_state(fast) == replica_state(general)
    assert sorted(fast.engine.invalid["a"]) == [2, 3]


def test_a_replay_declines_an_origin_filed_out_of_seq_order_between_its_ends():
    """The same with the first and last seqs in place (filed 1, 3, 2, 4): only
    the order of the seqs between them tells; seq 3's clock falls below seq 2's."""
    from crdtbook.events import make_order

    a = {seq: make_order(clock, "a", seq, "buy", "limit", 10, 1, "")
         for seq, clock in ((1, 10), (2, 30), (3, 20), (4, 40))}
    b = make_order(25, "b", 1, "sell", "limit", 10, 1, "")
    delta = AWORSet.from_entries([*(("a", s, a[s]) for s in (1, 3, 2, 4)), ("b", 1, b)])
    fast, general, took = replayed_both_ways(delta)
    assert not took
    assert replica_state(fast) == replica_state(general)
    assert sorted(fast.engine.invalid["a"]) == [3, 4]
