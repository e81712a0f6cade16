"""Compaction and snapshots: forgetting settled history, and standing in for it.

Theory of operation
-------------------
Below the final frontier F nothing can change, so a replica may drop what
it only kept to be able to rewind: the engine's log and fills before F
(see Engine.compact), and the events whose outcome it dropped. The causal
context still covers those events, so they never come back; the digest
already counts them.

A peer that lacks a dropped event cannot get it as a delta any more
(``needs_snapshot`` says so); it gets a ``Snapshot`` instead: the sender's
context, every event it still holds, the outcomes of the orders it kept
from before its engine's window, and its chain, membership and finality
state. ``install`` makes a replica stand exactly there, then merges back
whatever it held that the snapshot lacks.

These are functions of a ``Replica`` (the facade calls them): compaction
and installing touch every part of it, engine, set, chain checks,
membership and finality, and keep them consistent with one another.

Rules this module keeps
-----------------------
* Nothing above F is dropped, and nothing is dropped before every live
  member acknowledged having it: a node that has not got an event yet must
  still be able to get it, even if the only node holding it is this one.
* Every event is hashed into the digest before it leaves the store.
* A snapshot is installed only if it covers everything this replica has
  compacted: compacted history exists here only as dots in the context.
* Installing never moves F back, and keeps the safety counters and acks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from .aworset import AWORSet
from .book import Resting
from .context import CausalContext
from .engine import CANCEL_REASONS, CancelOutcome, MemberOutcome
from .events import BUY, CANCEL, ORDER
from .snapshot import Snapshot
from .views import order_view

if TYPE_CHECKING:
    from .replica import Replica


def compact(replica: Replica) -> Compaction:
    """Drop settled history at or below the final frontier; say what left memory.

    What leaves is final: the orders whose outcome was dropped (their final
    views) and the fills below F (numbered from ``fills_start``); the caller
    keeps them (the node's store) if it wants history.
    """
    final = replica.frontier()
    if not final:
        return Compaction(0, [], [], replica.engine.fills_base, [])
    replica.digest()  # hash every event before any leaves the store
    peers = [replica._acks.get(r) for r in replica.members() if r != replica.id]
    if any(ack is None for ack in peers):
        keep = _keep_everything
    else:
        # Every live member has each origin's seqs up to the least of their
        # contiguous ones: an event there (nearly every one compaction looks at)
        # is settled by one lookup, not one ``has`` call per peer.
        settled = _held_by_all(peers)

        def keep(event) -> bool:  # until every live member has it: it may need it
            replica_, seq = event.replica, event.seq
            if seq <= settled.get(replica_, 0):
                return False
            for ack in peers:  # noqa: SIM110 (a loop, not any() of a generator: per event)
                if not ack.has(replica_, seq):
                    return True
            return False
    start = replica.engine.fills_base
    gone, fills = replica.engine.compact(final, keep)
    store = replica.state.store
    orders = []
    events = []
    for outcome in gone:
        event = outcome.event
        events.append(event)
        if event.kind == ORDER:
            orders.append(order_view(event, outcome))
        seqs = store.get(event.replica)
        if seqs is not None:
            seqs.pop(event.seq, None)
            if not seqs:
                del store[event.replica]
    if gone or fills:
        replica._compacted = True
    return Compaction(len(gone), orders, fills, start, events)


class Compaction(NamedTuple):
    removed: int  # events that left memory
    orders: list  # OrderView of every order among them (final), in the order of ``events``
    fills: list  # the engine's (taker, maker, price, qty) records of the fills that left
    fills_start: int  # the number of the first of those fills
    events: list  # every event that left memory (orders, cancels, membership events)


def observe_ack(replica: Replica, peer: str, context: CausalContext) -> None:
    """``peer`` (in a pull) has seen everything in ``context``."""
    if peer != replica.id:
        replica._acks[peer] = context


def needs_snapshot(delta: AWORSet) -> bool:
    """A delta from ``missing`` that names dots it cannot carry (they were compacted)."""
    return delta.context.size() != len(delta)


def snapshot_state(replica: Replica) -> Snapshot:
    """Everything a peer needs to stand where ``replica`` stands.

    The retained orders are captured as they were before the engine's window
    (undo the window, read them, replay it: the same result by construction);
    the window's events travel as events and are matched again on arrival.
    """
    engine = replica.engine
    window = engine._rewind(0)
    base = []  # (replica, seq, remaining or removed, filled, reason): kept outcomes
    for outcome in sorted(engine.retained, key=lambda o: o.event):
        event = outcome.event
        if isinstance(outcome, Resting):
            base.append((event.replica, event.seq, outcome.remaining, outcome.filled,
                         outcome.reason if outcome.reason is not None
                         else outcome.cancel_reason))
        else:  # a cancel (with what it removed) or a membership event
            base.append((event.replica, event.seq, getattr(outcome, "removed", 0), 0,
                         outcome.reason))
    for event in window:
        engine.apply(event)
    replica.digest()
    state = replica.state
    membership = replica.membership
    return Snapshot(
        context=state.context.copy(),
        events=replica.events(),
        base=base,
        fills_base=engine.fills_base,
        invalid=sorted((r, s, reason) for r, marks in engine.invalid.items()
                       for s, reason in marks.items() if state.get(r, s) is not None),
        chain=sorted((r, c, r in replica._poisoned) for r, c in replica._chain_clock.items()),
        cutoff=sorted(membership.cutoff.items()),
        joins=sorted(membership.joins.items()),
        counted=sorted(membership.counted.items()),
        founded=membership.founded,
        keys=tuple(sorted(membership.keys.items())),
        final=replica._final,
        events_total=replica._events_total,
        digest_sum=replica._digest_sum,
        uncounted=replica._uncounted,
    )


def covers_what_was_dropped(state: AWORSet, context: CausalContext) -> bool:
    """Every dot seen in ``state`` is either still held there or seen by ``context``.

    Installing a snapshot replaces a replica's state; what it still holds is
    merged back, but what it compacted is only a dot in its context, and
    must already be part of the snapshot's state.
    """
    cc, store = state.context, state.store
    for replica in cc.replicas():
        held = store.get(replica, {})
        theirs = context.contiguous(replica)
        for seq in range(theirs + 1, cc.contiguous(replica) + 1):
            if seq not in held and not context.has(replica, seq):
                return False
        for seq in cc.cloud.get(replica, ()):
            if seq not in held and not context.has(replica, seq):
                return False
    return True


def install(replica: Replica, snapshot: Snapshot) -> int:
    """Make ``replica`` stand where a snapshot's sender stood, then re-merge what it held.

    The caller has checked ``covers_what_was_dropped``. Returns how many
    events it now holds.
    """
    held = replica.state.copy()
    clock = replica.clock.last
    membership = replica.membership
    claims = list(membership.claimed.values())
    old_final, old_counted, acks = replica._final, dict(membership.counted), dict(replica._acks)
    counters = (replica.frontier_regressions, replica.frontier_violations, replica.forged_conflicts,
                replica.conviction_retractions)
    convicted = dict(membership.convicted)
    replica.__init__(replica.id, replica._fresh is not None)
    replica._acks = acks
    (replica.frontier_regressions, replica.frontier_violations, replica.forged_conflicts,
     replica.conviction_retractions) = counters
    replica.clock.observe(clock)
    replica.observe_claims(claims)
    replica.state.context = snapshot.context.copy()
    for event in snapshot.events:
        replica.state.store.setdefault(event.replica, {})[event.seq] = event
        replica.clock.observe(event.clock)
    engine = replica.engine
    engine.fills_base = snapshot.fills_base
    for origin, seq, reason in snapshot.invalid:
        engine.invalid.setdefault(origin, {})[seq] = reason
    based = set()
    for origin, seq, amount, filled, reason in snapshot.base:
        event = replica.state.get(origin, seq)
        if event.kind == ORDER:
            outcome = Resting.of(event, engine.fills_base)
            outcome.remaining, outcome.filled = amount, filled
            if reason in CANCEL_REASONS:
                outcome.cancel_reason = reason
            else:
                outcome.reason = reason
            if amount:
                (engine.bids if event.side == BUY else engine.asks).append(event.price,
                                                                           outcome)
        elif event.kind == CANCEL:
            outcome = CancelOutcome.of(event)
            outcome.removed, outcome.reason = amount, reason
            outcome.target = engine.by_dot.get(event.target_replica, {}).get(
                event.target_seq)  # it sorts earlier: installed before it, if kept
        else:
            outcome = MemberOutcome(event, reason)
        engine.by_dot.setdefault(origin, {})[seq] = outcome
        engine.retained.append(outcome)
        based.add((origin, seq))
    for origin, clock_, poisoned in snapshot.chain:
        replica._chain_clock[origin] = clock_
        if poisoned:
            replica._poisoned.add(origin)
    # Fill the fresh membership's own dicts, never rebind them: the replica's
    # merge path holds a direct reference to the cutoff dict.
    membership = replica.membership
    membership.cutoff.update(snapshot.cutoff)
    membership.joins.update(snapshot.joins)
    membership.counted.update(snapshot.counted)
    for origin, counted in old_counted.items():  # what was known here still holds
        membership.counted[origin] = max(counted, membership.counted.get(origin, 0))
    membership.founded = snapshot.founded
    membership.keys.update(snapshot.keys)
    replica._final = snapshot.final  # raised to the old F once the held events are back
    replica._events_total = snapshot.events_total
    replica._digest_sum = snapshot.digest_sum
    replica._uncounted = snapshot.uncounted
    replica._compacted = True
    cc = replica.state.context
    window = [e for e in snapshot.events
              if (e.replica, e.seq) not in based and e.seq <= cc.contiguous(e.replica)]
    engine.update(sorted(window))
    leftover = AWORSet.from_entries(
        [(r, s, e) for r, s, e in held.entries() if not cc.has(r, s)])
    if len(leftover):
        replica._merge_general(leftover)
    for origin, cut in sorted(convicted.items()):  # a proof held here still holds
        replica.convict(origin, cut)
    replica._final = max(replica._final, old_final)
    return len(replica.state)


def _held_by_all(acks: list) -> dict[str, int]:
    """Per origin, the highest seq n such that every context of ``acks`` has all of
    1..n (origins where that is 0 are left out)."""
    if not acks:
        return {}
    settled = {}
    for replica in acks[0].replicas():
        top = min(ack.contiguous(replica) for ack in acks)
        if top:
            settled[replica] = top
    return settled


def _keep_everything(event) -> bool:
    return True


__all__ = [
    "compact", "covers_what_was_dropped", "install", "needs_snapshot", "observe_ack",
    "snapshot_state",
]
