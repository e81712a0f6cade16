"""Compaction's "every live member has it" check by the members' common contiguous seqs.

``compaction.compact`` keeps an event while some live peer's last
acknowledged context lacks it. Events at or below every peer's contiguous
seq of their origin are settled by one lookup (``_held_by_all``); the rest
still ask each peer's context. The same events must leave memory as with
every event asked of every peer: acks with gaps (clouds), an origin one peer
never saw, and peers behind one another.
"""

from __future__ import annotations

import copy
import random

import pytest

from crdtbook import compaction
from crdtbook.context import CausalContext
from crdtbook.replica import Replica

T = 1_764_000_000_000


def cluster(seed: int) -> tuple[Replica, list[Replica]]:
    """Three members, each placing batches merged everywhere; ``a`` also holds
    orders of its own nobody has acknowledged."""
    rng = random.Random(seed)
    a, b, c = (Replica(x * 32) for x in "abc")
    deltas = [a.bootstrap(now_ms=T), a.join(b.id, now_ms=T), a.join(c.id, now_ms=T)]
    for r in (b, c):
        for d in deltas:
            r.merge(d)
    t = T + 1
    for _ in range(12):
        for r in (a, b, c):
            t += 2
            batch = [(rng.choice(("buy", "sell")), str(rng.randint(1, 5)),
                      str(rng.randint(95, 105)), "limit", "acct") for _ in range(20)]
            delta = r.place_many(batch, now_ms=t)[0]._delta.get()
            for other in (a, b, c):
                if other is not r:
                    other.merge(delta)
    a.place_many([("buy", "1", "90", "limit", "acct")] * 5, now_ms=t + 5)
    return a, [b, c]


def lacking(context: CausalContext, rng: random.Random, origins: list[str]) -> CausalContext:
    """``context`` less a few dots of some origins (some below a gap: a cloud)."""
    dots = [(r, s) for r in context.replicas() for s in range(1, context.contiguous(r) + 1)]
    dropped = set()
    for origin in origins:
        top = context.contiguous(origin)
        if top:
            dropped |= {(origin, rng.randint(1, top)) for _ in range(3)}
    return CausalContext.from_dots(d for d in dots if d not in dropped)


def gone_every_peer_asked(replica: Replica, monkeypatch) -> set:
    with monkeypatch.context() as m:
        m.setattr(compaction, "_held_by_all", lambda acks: {})
        return {(e.replica, e.seq) for e in replica.compact().events}


@pytest.mark.parametrize("seed", range(6))
def test_the_same_events_leave_as_when_every_peer_is_asked(seed, monkeypatch):
    rng = random.Random(seed)
    a, peers = cluster(seed)
    b, c = peers
    ack_b, ack_c = b.context(), c.context()
    if seed % 3 == 1:
        ack_b = lacking(ack_b, rng, [c.id, a.id])
    elif seed % 3 == 2:
        ack_c = lacking(ack_c, rng, [b.id])
        ack_b = lacking(ack_b, rng, [a.id])
    a.observe_ack(b.id, ack_b)
    a.observe_ack(c.id, ack_c)
    twin = copy.deepcopy(a)
    gone = {(e.replica, e.seq) for e in a.compact().events}
    assert gone == gone_every_peer_asked(twin, monkeypatch)
    assert gone  # something left memory each time
    for replica, seq in gone:
        assert ack_b.has(replica, seq) and ack_c.has(replica, seq)
    assert a.digest() == twin.digest()


def test_held_by_all_is_the_least_contiguous_seq_of_every_context():
    x = CausalContext.from_dots([("p", s) for s in (1, 2, 3, 5)] + [("q", 1), ("r", 1)])
    y = CausalContext.from_dots([("p", s) for s in (1, 2, 3, 4, 5)] + [("q", 2), ("r", 1)])
    assert compaction._held_by_all([x, y]) == {"p": 3, "r": 1}
    assert compaction._held_by_all([y]) == {"p": 5, "r": 1}
    assert compaction._held_by_all([]) == {}
