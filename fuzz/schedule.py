"""One fuzz run: a seeded workload, a shuffling network, every invariant checked.

A run plays a random workload on R replicas (each acting on a partial, stale
view, so their clocks interleave), then finishes delivery over a simulated
network: every delta reaches every replica in a random order, some twice,
in random batches, and some replicas instead catch up by *pull* (sending
their causal context and merging exactly what a random peer says they lack).
At quiescence it checks (ARCHITECTURE.md, "Invariants"):

1. convergence: same digest, book, fills and order statuses everywhere;
2. sequential equivalence with the reference engine in tests/;
3. conservation, no overfill, no crossed book;
4. idempotence: delivering everything again changes nothing.

``check_run`` returns None or a one-line description of the first violation.
"""

from __future__ import annotations

import random

from crdtbook.aworset import AWORSet
from crdtbook.replica import Replica, ReplicaError
from tests.helpers import assert_invariants, assert_matches_reference, observable

from .workload import play, random_steps


def check_run(seed: int, replicas: int, events: int) -> tuple[str | None, int]:
    """Run one seeded schedule; return (violation or None, events created)."""
    rng = random.Random(seed)
    count = replicas
    steps = random_steps(rng, count, events)
    skew = [rng.randrange(0, 40) for _ in range(count)]
    played = play(count, steps, skew)
    deltas = played.deltas
    try:
        for replica in played.replicas:
            if rng.random() < 0.3:
                _catch_up_by_pull(replica, played.replicas, rng)
            else:
                _deliver_shuffled(replica, deltas, rng)
        # A restarted node: no state, a new id, catches up by pull alone.
        newcomer = Replica(f"n{seed % 1000}")
        _catch_up_by_pull(newcomer, played.replicas, rng)
        everyone = played.replicas + [newcomer]
        first = observable(everyone[0])
        for replica in everyone[1:]:
            if observable(replica) != first:
                return f"replica {replica.id} diverged from {everyone[0].id}", len(deltas)
        assert_matches_reference(everyone[0])
        for replica in everyone:
            assert_invariants(replica)
        for delta in deltas:
            everyone[0].merge(delta)
        if observable(everyone[0]) != first:
            return "a duplicate delivery changed the state", len(deltas)
    except AssertionError as exc:
        return f"invariant violated: {exc}".splitlines()[0][:300], len(deltas)
    except ReplicaError as exc:  # a replica refused what an honest peer sent
        return f"a replica refused an honest delta: {exc}"[:300], len(deltas)
    return None, len(deltas)


def _deliver_shuffled(replica: Replica, deltas: list[AWORSet], rng: random.Random) -> None:
    order = list(deltas) + rng.sample(deltas, k=min(len(deltas), rng.randrange(0, 6)))
    rng.shuffle(order)
    while order:
        size = rng.choice((1, 1, 1, 2, 5, 20))
        batch, order = order[:size], order[size:]
        combined = AWORSet()
        for delta in batch:
            combined.merge(delta)
        replica.merge(combined)


def _catch_up_by_pull(replica: Replica, peers: list[Replica], rng: random.Random) -> None:
    others = [p for p in peers if p is not replica]
    rng.shuffle(others)
    for peer in others:
        replica.merge(peer.missing(replica.context()))
