"""A replay's proof (``aworset.InOrderDelta``) against the checks it stands for.

The decode of a proven array notes whether its events come in position order,
with no origin's clock repeated and each origin's seqs 1..n in that order
(``codec._proven_events``); a replay into a new replica then hands those
events to the engine as they are, without checking each origin's clocks or
sorting (``Merging._merge_proven``). That must change nothing but speed: the
same replica, field for field, as the general path on the same delta, for
deltas the proof holds for, deltas it must not hold for (a repeated clock, a
clock falling along an origin's seqs, events out of order), and decoded
deltas changed after their decode (the proof must then be declined).
"""

from __future__ import annotations

import random

import cbor2
import pytest

from crdtbook import codec
from crdtbook.aworset import AWORSet, InOrderDelta
from crdtbook.events import make_cancel, make_order
from crdtbook.replica import Replica

from .test_bulk_paths import replayed_both_ways, replica_state

ORIGINS = ("a" * 32, "b" * 32, "c" * 32)  # ids the scan's pattern takes (32 characters)


def events(count: int, seed: int, ties: bool = True) -> list:
    """Orders and cancels of three origins, each origin's clocks rising with its
    seqs; with ``ties``, different origins often share a clock."""
    rng = random.Random(seed)
    clock = 1_000_000
    seqs = dict.fromkeys(ORIGINS, 0)
    last = dict.fromkeys(ORIGINS, 0)
    out = []
    for _ in range(count):
        clock += rng.choice((0, 1, 1)) if ties else 1
        origin = rng.choice(ORIGINS)
        clock = max(clock, last[origin] + 1)  # an origin's clocks strictly rise
        last[origin] = clock
        seqs[origin] += 1
        seq = seqs[origin]
        if seq > 1 and rng.random() < 0.15:
            out.append(make_cancel(clock, origin, seq, origin, rng.randint(1, seq - 1)))
        else:
            side = rng.choice(("buy", "sell"))
            price = (100 + rng.randint(-3, 3)) * 10**8
            out.append(make_order(clock, origin, seq, side, "limit", price,
                                  rng.randint(1, 5) * 10**8, "desk"))
    return sorted(out)


def message(listed: list) -> bytes:
    """A delta listing ``listed`` in that order, its context exactly their dots."""
    tops: dict = {}
    for event in listed:
        tops[event.replica] = max(tops.get(event.replica, 0), event.seq)
    return cbor2.dumps({"v": 1, "kind": "delta",
                        "events": [codec.event_to_wire(e) for e in listed],
                        "context": [[r, top, []] for r, top in sorted(tops.items())]},
                       canonical=True)


def proven_taken(delta: AWORSet) -> bool:
    """Whether a new replica's replay of ``delta`` goes by its proof (on a copy
    of the replica: the replay itself is compared by the caller)."""
    proof = getattr(delta, "proof", None)
    return proof is not None and Replica("probe")._merge_proven(delta, *proof) is not None


def assert_same_replay(delta: AWORSet, final: int = 0) -> None:
    fast, general, _ = replayed_both_ways(delta, final)
    assert replica_state(fast) == replica_state(general)
    assert fast.take_fresh() == general.take_fresh()
    assert fast.fills() == general.fills()


@pytest.mark.parametrize("seed", range(6))
def test_a_replay_by_its_proof_is_the_general_merge(seed):
    listed = events(200 + 50 * seed, seed, ties=seed % 2 == 0)
    delta = codec.decode_delta(message(listed))
    assert isinstance(delta, InOrderDelta) and proven_taken(delta)
    assert list(delta.proof[0]) == listed
    assert_same_replay(delta)
    # F at the first clock: declined, and the general path decides
    late = codec.decode_delta(message(listed))
    replica = Replica("late")
    replica._final = listed[0].clock
    assert replica._merge_proven(late, *late.proof) is None
    assert_same_replay(late, final=listed[0].clock)


def test_no_proof_for_events_listed_out_of_position_order():
    listed = events(120, 7)
    rng = random.Random(7)
    shuffled = rng.sample(listed, len(listed))
    delta = codec.decode_delta(message(shuffled))
    assert not isinstance(delta, InOrderDelta)
    assert_same_replay(delta)
    swapped = list(listed)
    i = next(i for i in range(len(listed) - 1) if listed[i].clock < listed[i + 1].clock)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    assert not isinstance(codec.decode_delta(message(swapped)), InOrderDelta)


def test_no_proof_when_an_origin_repeats_a_clock():
    """Two events of one origin at one clock, listed in position order: the
    general path rejects the second for its clock; the proof must not hold
    (a tie is taken only between different origins)."""
    listed = events(100, 3, ties=False)
    a = [e for e in listed if e.replica == ORIGINS[0]]
    first, second = a[4], a[5]
    # the second at the first's clock: still strictly after it in position order
    tied = make_order(first.clock, second.replica, second.seq, "buy", "limit", 10**8, 10**8, "")
    relisted = sorted([tied if e is second else e for e in listed])
    delta = codec.decode_delta(message(relisted))
    assert not isinstance(delta, InOrderDelta)
    assert_same_replay(delta)
    fast, _, _ = replayed_both_ways(delta)
    assert second.seq in fast.engine.invalid[ORIGINS[0]]


def test_no_proof_when_an_origin_s_clock_falls_along_its_seqs():
    """An origin's seq k + 2 placed before seq k + 1 by clock, listed in position
    order (so in order, and no clock repeated): its seqs are not filed 1..n in
    order, the proof must not hold, and the general path rejects it."""
    listed = events(100, 5, ties=False)
    a = [e for e in listed if e.replica == ORIGINS[0]]
    k = next(k for k in range(1, len(a) - 1) if a[k].clock - a[k - 1].clock >= 2)
    after = a[k + 1]  # placed between a[k - 1] and a[k] by clock: no clock repeated
    earlier = make_order(a[k].clock - 1, after.replica, after.seq, "sell", "limit", 10**8,
                         10**8, "")
    relisted = sorted([earlier if e is after else e for e in listed])
    delta = codec.decode_delta(message(relisted))
    assert not isinstance(delta, InOrderDelta)
    assert_same_replay(delta)
    fast, _, _ = replayed_both_ways(delta)
    assert after.seq in fast.engine.invalid[ORIGINS[0]]


def test_a_decoded_delta_changed_after_its_decode_is_not_taken_on_its_proof():
    listed = events(150, 9)
    # an event replaced under its dot (a different quantity)
    delta = codec.decode_delta(message(listed))
    victim = listed[40]
    if victim.kind == "order":
        forged = victim._replace(qty=victim.qty + 10**8)
    else:
        forged = victim._replace(target_seq=1)
    assert forged != victim
    delta.store[victim.replica][victim.seq] = forged
    assert not proven_taken(delta)
    assert_same_replay(delta)
    # a delta joined into it (AWORSet.merge changes the store in place)
    delta = codec.decode_delta(message(listed[:100]))
    later = AWORSet.from_entries((e.replica, e.seq, e) for e in listed[100:])
    delta.merge(later)
    assert not proven_taken(delta)
    assert_same_replay(delta)
    # the same events, an origin's dict filed anew in another order: still the
    # same store, so the proof holds and the replay is the same
    delta = codec.decode_delta(message(listed))
    seqs = delta.store[ORIGINS[1]]
    delta.store[ORIGINS[1]] = dict(reversed(seqs.items()))
    assert proven_taken(delta)
    assert_same_replay(delta)
    # a context changed to claim one dot fewer of an origin: declined (it no
    # longer matches the store), and the general path decides
    delta = codec.decode_delta(message(listed))
    delta.context.vv[ORIGINS[2]] -= 1
    assert not proven_taken(delta)
