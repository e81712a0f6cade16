"""``Replica.merge_blocks`` (the door's merge of a push) against ``merge`` of its delta.

The door used to build one delta of every event it took
(``AWORSet.from_entries``) and ``merge`` it; ``merge_blocks`` takes the
blocks themselves, and stores each origin's run in one step when it
continues what is held. It must change nothing but speed: two replicas fed
the same pushes, between the same local orders, one by each way, hold the
same state field for field (store and its order, context, clock, chains,
engine record for record, rewinds), report the same new events in the same
order (``take_fresh``: what the node journals) and refuse the same pushes,
changing nothing. Pushes are drawn as a node receives them (each origin's
blocks in order, several origins at once) and as it should never receive
them (gaps, repeats, blocks of one origin that do not chain, a block whose
range does not match its events, a single event, the replica's own events).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.aworset import AWORSet
from crdtbook.feed import Block
from crdtbook.merging import ReplicaError
from crdtbook.replica import Replica
from fuzz.workload import play, random_steps

from .helpers import assert_matches_reference, observable
from .strategies import workloads
from .test_bulk_paths import everything, replica_state


def block(events: list, first: int | None = None, last: int | None = None) -> Block:
    return Block(events[0].replica, events[0].seq if first is None else first,
                 events[-1].seq if last is None else last, b"", b"", tuple(events))


def by_delta(replica: Replica, blocks: list[Block]) -> int:
    """What the door did before: one delta of every event, merged."""
    return replica.merge(AWORSet.from_entries(
        (e.replica, e.seq, e) for b in blocks for e in b.events))


def both(pair: tuple[Replica, Replica], blocks: list[Block]) -> None:
    fast, plain = pair
    outcomes = []
    for merge in (fast.merge_blocks, lambda b: by_delta(plain, b)):
        try:
            outcomes.append(("added", merge(blocks)))
        except ReplicaError as exc:
            outcomes.append(("refused", str(exc)))
    assert outcomes[0] == outcomes[1]
    assert fast.take_fresh() == plain.take_fresh()  # the same events, in the same order


def pushes(events: list, rnd: random.Random) -> list[list[Block]]:
    """Each origin's events cut into blocks, sent in order, a few origins a push;
    now and then a block skipped (a gap, sent later), one sent twice, two of an
    origin that do not chain, a block whose range is not its events', one event."""
    queues: dict[str, list] = {}
    for event in events:
        queues.setdefault(event.replica, []).append(event)
    cuts: dict[str, list[list]] = {}
    for origin, queue in sorted(queues.items()):
        cuts[origin], at = [], 0
        while at < len(queue):
            size = rnd.choice((1, 2, 3, 5, 8, 20))
            cuts[origin].append(queue[at:at + size])
            at += size
    out: list[list[Block]] = []
    sent: list[Block] = []
    while cuts:
        push: list[Block] = []
        for origin in rnd.sample(sorted(cuts), rnd.randint(1, len(cuts))):
            chunks = cuts[origin]
            roll = rnd.random()
            if roll < 0.1 and len(chunks) > 1:
                chunks[0], chunks[1] = chunks[1], chunks[0]  # the next one first: a gap
            take = 2 if roll > 0.8 and len(chunks) > 1 else 1
            for chunk in chunks[:take]:
                push.append(block(chunk))
            del chunks[:take]
            if not chunks:
                del cuts[origin]
        roll = rnd.random()
        if roll < 0.1 and sent:
            push.append(rnd.choice(sent))  # a repeat
        elif roll < 0.15 and len(push[0].events) > 1:
            events_ = push[0].events
            push[0] = block(list(events_), events_[0].seq + 1, events_[-1].seq + 1)  # a lie
        sent.extend(push)
        out.append(push)
    return out


def fed_both_ways(events: list, rnd: random.Random) -> tuple[Replica, Replica]:
    pair = (Replica("own", track_fresh=True), Replica("own", track_fresh=True))
    placed = []
    for push in pushes(events, rnd):
        if rnd.random() < 0.4:  # the node's own orders between pushes (stamped after them)
            if placed and rnd.random() < 0.25:
                target = rnd.choice(placed)
                for replica in pair:
                    replica.cancel(target, 0)
            else:
                side, qty, price = (rnd.choice(("buy", "sell")), str(rnd.randint(1, 5)),
                                    str(rnd.randint(95, 105)))
                made = [replica.place(side, qty, price, "limit", "", 0) for replica in pair]
                placed.append(made[0].order.dot)
            assert pair[0].take_fresh() == pair[1].take_fresh()
        both(pair, push)
    return pair


def assert_same(fast: Replica, plain: Replica) -> None:
    assert replica_state(fast) == replica_state(plain)
    assert list(fast.state.store) == list(plain.state.store)
    assert [list(s) for s in fast.state.store.values()] == \
        [list(s) for s in plain.state.store.values()]
    assert (fast.engine.rewinds, fast.engine.replayed) == \
        (plain.engine.rewinds, plain.engine.replayed)
    assert observable(fast) == observable(plain)


@settings(max_examples=80, deadline=None)
@given(workloads(max_size=150), st.randoms(use_true_random=False))
def test_merge_blocks_is_merge_of_its_delta(workload, rnd):
    count, steps, skew = workload
    events = everything(play(count, steps, skew)).events()
    fast, plain = fed_both_ways(events, rnd)
    assert_same(fast, plain)


def test_a_long_seeded_cluster_of_pushes_between_local_orders(monkeypatch):
    rng = random.Random(11)
    events = everything(play(3, random_steps(rng, 3, 1500), [0, 2, 5])).events()
    declined = []
    general = Replica._merge_blocks_delta
    monkeypatch.setattr(Replica, "_merge_blocks_delta",
                        lambda self, blocks: declined.append(self) or general(self, blocks))
    fast, plain = fed_both_ways(events, random.Random(5))
    assert_same(fast, plain)
    assert fast.engine.rewinds > 10  # the pushes did land behind local orders
    # most pushes took the run's way (the rest: the first, gaps, repeats, lies)
    calls = len(pushes(events, random.Random(5)))
    assert 0 < declined.count(fast) < calls // 2
    assert_matches_reference(fast)


def test_a_push_of_own_events_is_refused_or_taken_as_merge_does():
    pair = (Replica("own", track_fresh=True), Replica("own", track_fresh=True))
    for replica in pair:
        replica.place("buy", "1", "100", "limit", "", 1_000)
        replica.place("sell", "2", "101", "limit", "", 1_001)
        replica.take_fresh()
    held = pair[0].events()
    peer = Replica("peer")
    peer.place("sell", "1", "99", "limit", "", 1_002)
    peer.place("buy", "1", "98", "limit", "", 1_003)
    theirs = peer.events()
    before = replica_state(pair[0])
    both(pair, [block(held)])  # its own events, sent back: nothing new
    forged = [held[0], held[1]._replace(qty=held[1].qty + 1)]
    unmade = [held[1]._replace(seq=3, clock=held[1].clock + 5)]  # a seq it never minted
    for push in ([block(forged)], [block(theirs), block(forged)], [block(unmade)],
                 [block(theirs), block(unmade)]):
        both(pair, push)
        assert replica_state(pair[0]) == before  # refused: nothing changed
    with pytest.raises(ReplicaError):
        pair[0].merge_blocks([block(theirs), block(forged)])
    both(pair, [block(theirs)])
    assert_same(*pair)
    assert pair[0].event_count() == 4
