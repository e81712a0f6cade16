"""Replica: one participant's copy of the exchange, as a pure state machine.

Theory of operation
-------------------
The replicated state is an ``AWORSet`` of events keyed by their dots. The
book, the fills and every order's status are a function of that set, kept
up to date incrementally by the ``Engine``.

Which events the engine sees: those a replica has *contiguously* from each
origin, i.e. dot ``(r, n)`` once every ``(r, 1..n)`` has been seen (the
causal context's version vector). An event that arrives ahead of a gap waits
in the set until the gap fills. This is still a function of the set (two
replicas with the same events apply the same ones), and it lets every
per-replica rule be checked against the event's predecessors, which are then
known:

* the clocks along one replica's seq must strictly increase; the first event
  that breaks this, and every later event of that replica, is rejected;
* a cancel must target an earlier order of its own replica.

The node drives a replica with four calls and reads it with views:

* ``place`` / ``cancel`` create a local event and return the delta to send;
* ``merge(delta)`` joins a delta from a peer (or a decoded pull answer);
* ``missing(context)`` answers a peer's pull with exactly what it lacks;
* ``book``, ``fills``, ``order``, ``orders``, ``events``, ``digest``.

Time comes in as ``now_ms`` arguments: the replica never reads a clock.

This module keeps placing and merging (the hot paths) and the chain checks;
the other concerns live beside it and the facade delegates to them:

    membership   Membership: joins, cutoffs, claims, the floor under F
    compaction   compact, snapshot_state, install (functions of a Replica)
    views        the NamedTuples callers get, built from engine outcomes
    snapshot     Claim and Snapshot, shared with the codec

Rules this module keeps
-----------------------
* One event's admission depends only on the set: contiguity, its replica's
  clock chain and cutoff, never on arrival order.
* The final frontier F never moves back, and no event at or below it is
  admitted; both are counted (``frontier_regressions``,
  ``frontier_violations``) rather than trusted.
* The in-order path of ``_merge_one`` reads plain attributes of the replica
  only (``_cutoff`` is the membership's own dict, ``_final`` is F itself):
  it is the throughput of a live node.
* Deltas no honest peer sends are refused before anything changes.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable

import cbor2

from . import compaction
from .amount import format_amount, parse_amount
from .aworset import AWORSet
from .clock import HybridClock
from .codec import event_to_wire
from .context import CausalContext
from .dot import Dot, check_replica, parse_dot
from .engine import Engine, member_reason
from .events import (
    CANCEL,
    EVICT,
    JOIN,
    LEAVE,
    MARKET,
    MEMBER,
    ORDER,
    SIDES,
    TYPES,
    Cancel,
    Member,
    Order,
    make_cancel,
    make_member,
    make_order,
)
from .membership import Membership
from .snapshot import Claim, Snapshot
from .views import (
    Book,
    Cancelled,
    CancelView,
    Fill,
    OrderView,
    Placed,
    fill_views,
    order_view,
)
from .views import cancel_view as _cancel_view

REASON_CLOCK = "clock does not increase along its replica's seq"
REASON_CLOCK_AFTER = "an earlier event of its replica was rejected for its clock"
REASON_RETIRED = "its replica had left or was evicted before this event"


class ReplicaError(ValueError):
    """A local request the replica refuses (unknown order, not ours, bad field)."""


class Replica:
    def __init__(self, replica_id: str, track_fresh: bool = False) -> None:
        self.id = check_replica(replica_id)
        self.state = AWORSet()
        self.clock = HybridClock()
        self.engine = Engine()
        # per origin replica: clock of the last event checked along its seq chain
        self._chain_clock: dict[str, int] = {}
        self._poisoned: set[str] = set()  # origins whose clock chain broke
        self.membership = Membership(self.id)
        # The membership's own cutoff dict, not a copy: the in-order merge path
        # reads it for every event and must not take a hop through the object.
        self._cutoff = self.membership.cutoff
        self._final = 0  # F (see frontier()); merging checks every event against it
        # Both must stay 0: an event below F arriving, or F wanting to move back,
        # would each mean a fill reported final could change (the fuzzer checks).
        self.frontier_regressions = 0
        self.frontier_violations = 0
        # digest: a sum of per-event hashes, brought up to date lazily (see digest())
        self._digest_sum = 0
        self._unhashed: list[Order | Cancel] = []
        self._events_total = 0  # every event ever held, compacted ones included
        self._compacted = False
        self._acks: dict[str, CausalContext] = {}  # per peer replica: its last pull's context
        self.forged_conflicts = 0
        # events new here since the last take_fresh(), for an owner that persists
        # them (None: nobody asked, so nothing accumulates)
        self._fresh: list[Order | Cancel | Member] | None = [] if track_fresh else None

    # -- local events ------------------------------------------------------
    def place(
        self,
        side: str,
        qty: str,
        price: str | None = None,
        type: str = "limit",
        account: str = "",
        now_ms: int = 0,
    ) -> Placed:
        """Create an order at this replica. Raises ReplicaError on a bad field."""
        self._still_here()
        if side not in SIDES:
            raise ReplicaError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        if type not in TYPES:
            raise ReplicaError(f"type must be one of {', '.join(TYPES)}, got {type!r}")
        try:
            units = parse_amount(qty, "quantity")
            if type == MARKET:
                if price is not None:
                    raise ReplicaError("a market order takes no price")
                price_units = 0
            elif price is None:
                raise ReplicaError(f"a {type} order needs a price")
            else:
                price_units = parse_amount(price, "price")
            seq = self._next_seq()
            order = make_order(self.clock.peek(now_ms), self.id, seq, side, type,
                               price_units, units, account)
        except ReplicaError:
            raise
        except ValueError as exc:
            raise ReplicaError(str(exc)) from None
        order = order._replace(clock=self._tick(now_ms))
        fills_before = len(self.engine.fills)
        delta = self._local(order)
        fills = [f for f in fill_views(self.engine.fills[fills_before:])
                 if f.taker == order.dot]
        return Placed(delta, self.order(order.dot), fills)

    def cancel(self, order_id: Dot | str, now_ms: int = 0) -> Cancelled:
        """Cancel an order this replica placed. Raises ReplicaError otherwise."""
        self._still_here()
        try:
            target = parse_dot(order_id) if isinstance(order_id, str) else Dot(*order_id)
        except ValueError as exc:
            raise ReplicaError(str(exc)) from None
        event = self.state.get(target.replica, target.seq)
        if event is None and self.state.context.has(target.replica, target.seq):
            raise ReplicaError(f"order {target} is settled and final; nothing rests to cancel")
        if event is None or event.kind != ORDER:
            raise ReplicaError(f"unknown order {target}")
        if target.replica != self.id:
            raise ReplicaError(f"order {target} was placed at replica {target.replica}, "
                               f"not here ({self.id}); cancel it there")
        cancel = make_cancel(self._tick(now_ms), self.id, self._next_seq(),
                             target.replica, target.seq)
        delta = self._local(cancel)
        return Cancelled(delta, self.cancel_view(cancel.dot))

    def _still_here(self) -> None:
        if self.id in self._cutoff:
            raise ReplicaError(f"replica {self.id} has left or was evicted; it creates no events")

    def _tick(self, now_ms: int) -> int:
        try:
            return self.clock.tick(now_ms)
        except OverflowError as exc:
            raise ReplicaError(f"cannot stamp a new event: {exc}") from None

    def _next_seq(self) -> int:
        return self.state.context.contiguous(self.id) + 1

    def _local(self, event: Order | Cancel) -> AWORSet:
        self._merge_one(event)
        return AWORSet.from_entries([(event.replica, event.seq, event)])

    # -- replication ---------------------------------------------------------
    def merge(self, delta: AWORSet) -> int:
        """Join a delta (or a whole state) from anywhere; update book and fills.

        Returns how many events were new here (0 for a duplicate delivery).
        Raises ReplicaError, changing nothing, if the delta speaks for dots of
        this replica's own id that it never minted (only a forger or a restarted
        node reusing its id could send those; both would mint duplicate dots).
        """
        if len(delta.store) == 1:
            single = _single_event(delta)
            if single is not None:  # its context is exactly its own dot: no removal
                if single.replica == self.id:
                    self._refuse(delta)
                return self._merge_one(single)
        self._refuse(delta)
        return self._merge_general(delta)

    def _refuse(self, delta: AWORSet) -> None:
        """Raise ReplicaError for the deltas no honest peer sends; check before any change.

        * events under this replica's own id that it never created, or that
          differ from the ones it did (a forger, or a node restarted with a
          reused id: either way duplicate dots);
        * removals: a context covering dots the delta does not carry would
          delete events here. Removal is local compaction below the final
          frontier, never something a peer sends; accepting one would let
          chain checks see different predecessors on different replicas.
        """
        own = self.state.context.vv.get(self.id, 0)
        context = delta.context
        cloud = context.cloud.get(self.id)
        mine = delta.store.get(self.id)
        if (
            context.vv.get(self.id, 0) > own
            or (cloud and max(cloud) > own)
            or (mine and any(self._altered_own(s, e) for s, e in mine.items()))
        ):
            raise ReplicaError(
                f"refusing a delta with events under this replica's own id {self.id!r} "
                "that it did not create"
            )
        carried = sum(len(seqs) for seqs in delta.store.values())
        covered = context.size()
        if covered != carried:
            raise ReplicaError(
                f"refusing a delta whose context covers {covered - carried} dots it does not "
                "carry (a removal); removal is reserved for compaction, not supported yet"
            )

    def _altered_own(self, seq: int, event) -> bool:
        """An event under this replica's id that is not the one it made."""
        held = self.state.get(self.id, seq)
        if held is None:  # never made (seq beyond ours), or compacted away: then fine
            return seq > self.state.context.contiguous(self.id)
        return held != event

    def _merge_general(self, delta: AWORSet) -> int:
        state = self.state
        before = {r: state.context.contiguous(r) for r in delta.context.replicas()}
        changes = state.merge(delta)
        if not changes and all(state.context.contiguous(r) == n for r, n in before.items()):
            return 0
        if changes.added:
            self.clock.observe(max(event.clock for _, _, event in changes.added))
            self._unhashed.extend(event for _, _, event in changes.added)
            if self._fresh is not None:
                self._fresh.extend(event for _, _, event in changes.added)
            self._events_total += len(changes.added)
        if changes.replaced:
            if self._compacted:
                # History is gone, so no rebuild: keep what was held. Only a forger
                # sends two events under one dot.
                for replica, seq, old, _ in changes.replaced:
                    state.store[replica][seq] = old
                self.forged_conflicts += len(changes.replaced)
            else:
                self._digest_sum, self._unhashed = 0, [e for _, _, e in state.entries()]
                self._rebuild()
                return len(changes.added)
        ready = []
        for replica, old in before.items():
            new = state.context.contiguous(replica)
            if new > old:
                self._check_chain(replica, old, new, ready)
        self._admit(ready)
        return len(changes.added)

    def _merge_one(self, event: Order | Cancel) -> int:
        """``merge`` for the common delta: one event whose context is its own dot.

        The same join, minus the generality: a fresh dot is stored, its dot
        added to the context, and whatever became contiguous goes to the engine.
        The first branch is the hot path of a live node: the next event of its
        origin, in order.
        """
        replica, seq = event.replica, event.seq
        state = self.state
        cc = state.context
        top = cc.vv.get(replica, 0)
        if seq == top + 1 and replica not in cc.cloud and event.kind != MEMBER:
            seqs = state.store.get(replica)
            if seqs is None:
                seqs = state.store[replica] = {}
            seqs[seq] = event
            cc.vv[replica] = seq
            clock = self.clock
            if event.clock > clock.last:
                clock.last = event.clock
            self._unhashed.append(event)
            if self._fresh is not None:
                self._fresh.append(event)
            self._events_total += 1
            engine = self.engine
            if (event.clock <= self._chain_clock.get(replica, 0) or replica in engine.invalid
                    or replica in self._cutoff):
                self._check_chain(replica, top, seq, [])
            self._chain_clock[replica] = event.clock
            if event.clock <= self._final:  # see _admit: must never happen
                self.frontier_violations += 1
            engine.add(event)
            return 1
        if cc.has(replica, seq):
            held = state.get(replica, seq)
            if held is None or held == event or held < event:
                return 0
            return self._merge_general(AWORSet.from_entries([(replica, seq, event)]))
        seqs = state.store.get(replica)
        if seqs is None:
            seqs = state.store[replica] = {}
        seqs[seq] = event
        cc.add(replica, seq)
        self.clock.observe(event.clock)
        self._unhashed.append(event)
        if self._fresh is not None:
            self._fresh.append(event)
        self._events_total += 1
        new = cc.contiguous(replica)
        if new > top:
            ready: list = []
            self._check_chain(replica, top, new, ready)
            self._admit(ready)
        return 1

    def _check_chain(self, replica: str, old: int, new: int, ready: list) -> None:
        """Admit seqs old+1..new of ``replica``: check its clock chain and cutoff."""
        seqs = self.state.store.get(replica, {})
        last = self._chain_clock.get(replica, 0)
        poisoned = replica in self._poisoned
        cut = self._cutoff.get(replica)
        invalid = self.engine.invalid
        for seq in range(old + 1, new + 1):
            event = seqs.get(seq)
            if event is None:  # seen and removed: it never enters the engine
                continue
            if poisoned:
                invalid.setdefault(replica, {})[seq] = REASON_CLOCK_AFTER
            elif event.clock <= last:
                poisoned = True
                self._poisoned.add(replica)
                invalid.setdefault(replica, {})[seq] = REASON_CLOCK
            elif cut is not None and seq > cut:
                invalid.setdefault(replica, {})[seq] = REASON_RETIRED
            ready.append(event)
            last = event.clock
        self._chain_clock[replica] = last

    def _admit(self, ready: list) -> None:
        """Send newly contiguous events to the engine, applying membership changes first.

        A valid leave or evict lowers its target's cutoff: the target's events
        after it are rejected, including ones already matched (they are replayed
        as rejected, from the earliest of them).
        """
        engine = self.engine
        replay: list = []
        for event in ready:
            if event.kind != MEMBER or self._member_reason(event) is not None:
                continue
            cut = self.membership.apply(event)
            if cut is None:
                continue
            target = event.target
            top = self.state.context.contiguous(target)
            held = self.state.store.get(target, {})
            for seq in sorted(s for s in held if cut < s <= top):
                marks = engine.invalid.setdefault(target, {})
                if marks.setdefault(seq, REASON_RETIRED) != REASON_RETIRED:
                    continue  # already rejected for its clock: nothing changes
                event = held[seq]
                if event.clock <= self._final:
                    # A cutoff reaching back below F would change what was reported
                    # final: only an evict racing the evicted replica's own last
                    # messages does that (the documented trade-off). Count it.
                    self.frontier_violations += 1
                if engine.outcome(target, seq) is not None and engine.in_window(event):
                    replay.append(event)
        if replay:
            ready = ready + replay
        if len(ready) > 1:
            ready.sort()
        if ready and ready[0].clock <= self._final:
            invalid = engine.invalid
            self.frontier_violations += sum(
                1 for e in ready
                if e.clock <= self._final and not invalid.get(e.replica, {}).get(e.seq)
                and e not in replay
            )
        engine.update(ready, replay)

    def _member_reason(self, event: Member) -> str | None:
        """Why a membership event has no effect, or None.

        Only its own rules and its replica's clock chain count, never a cutoff:
        a cutoff may arrive before or after it, and the effect must not depend
        on which came first.
        """
        marks = self.engine.invalid.get(event.replica)
        reason = marks.get(event.seq) if marks else None
        if reason in (REASON_CLOCK, REASON_CLOCK_AFTER):
            return reason
        return member_reason(event)

    def _rebuild(self) -> None:
        """Recompute everything from the set (after a forged duplicate dot)."""
        self._chain_clock.clear()
        self._poisoned.clear()
        self.membership.reset()
        self.engine.invalid.clear()
        self.engine.reset()
        ready: list = []
        for replica in self.state.context.replicas():
            self._check_chain(replica, 0, self.state.context.contiguous(replica), ready)
        self._admit(ready)

    # -- membership and finality ---------------------------------------------
    def bootstrap(self, now_ms: int = 0) -> AWORSet:
        """Start a new cluster: this replica admits itself (only the very first node)."""
        if self.is_member(self.id):
            raise ReplicaError(f"{self.id} is already a member")
        return self._local(self._member_event(JOIN, self.id, 0, now_ms))

    def join(self, target: str, now_ms: int = 0) -> AWORSet:
        """Admit ``target`` (sponsor it). Its events will all sort after this one."""
        try:
            check_replica(target)
        except ValueError as exc:
            raise ReplicaError(str(exc)) from None
        if not self.is_member(self.id):
            raise ReplicaError(f"{self.id} is not a member yet and cannot admit others")
        if target in self.membership.joins:
            raise ReplicaError(f"{target} is already a member")
        return self._local(self._member_event(JOIN, target, 0, now_ms))

    def leave(self, now_ms: int = 0) -> AWORSet:
        """Announce that this replica stops here, so it no longer holds finality back."""
        if self.id in self._cutoff:
            raise ReplicaError(f"{self.id} has already left")
        return self._local(self._member_event(LEAVE, self.id, self._next_seq(), now_ms))

    def evict(self, target: str, now_ms: int = 0) -> AWORSet:
        """Evict a vanished replica: its events after the last one held here are rejected."""
        if target == self.id:
            raise ReplicaError("a replica cannot evict itself; it leaves instead")
        if target not in self.members():
            raise ReplicaError(f"{target} is not a current member")
        last = self.state.context.contiguous(target)
        return self._local(self._member_event(EVICT, target, last, now_ms))

    def _member_event(self, action: str, target: str, last_seq: int, now_ms: int) -> Member:
        return make_member(self._tick(now_ms), self.id, self._next_seq(), action, target,
                           last_seq)

    def is_member(self, replica: str) -> bool:
        return self.membership.is_member(replica, self.state.context)

    def members(self) -> list[str]:
        """Replicas that joined or produced events and have not (fully) left."""
        return self.membership.members(self.state.context)

    def claim(self, now_ms: int) -> Claim:
        """This replica's promise: no new event of it at or below the returned clock.

        Sent in every exchange (a heartbeat when idle).
        """
        return self.membership.claim(self.clock, self.state.context, now_ms)

    def claims(self) -> list[Claim]:
        """Every claim known here (max-merged), this replica's own included."""
        return self.membership.claims(self.clock, self.state.context)

    def observe_claims(self, claims: Iterable[Claim]) -> None:
        self.membership.observe_claims(claims)

    # -- finality --------------------------------------------------------------
    def frontier(self) -> int:
        """The final frontier F: every event at or below clock F is known here.

        F is raised to the membership's floor (the least clock counted for any
        member; see membership.py) and never decreases; an attempt is counted
        in ``frontier_regressions`` (it would mean a member appeared below F).
        """
        low = self.membership.floor(self.state, self.clock.last)
        if low is not None:
            if low > self._final:
                self._final = low
            elif low < self._final:
                self.frontier_regressions += 1
        return self._final

    def order_final(self, view: OrderView) -> bool:
        """An order is final once it is at or below F and nothing of it rests:
        then neither its status nor its fills can change."""
        return view.status not in ("open", "pending") and view.clock <= self.frontier()

    def final_fill_count(self) -> int:
        """Fills are in taker position order, so the final ones are a prefix: its
        length, counted from the very first fill (compacted ones included)."""
        return self.engine.fills_base + bisect_right(
            self.engine.fills, self.frontier(), key=lambda fill: fill[0].event.clock)

    @property
    def fills_base(self) -> int:
        """How many fills compaction took out: ``fills()[i]`` is fill number base + i."""
        return self.engine.fills_base

    # -- compaction and snapshots (see compaction.py) ---------------------------
    def take_fresh(self) -> list:
        """Every event that became new here since the last call, in arrival order.

        The node hands them to its store: an event enters the set in memory
        and the store in the same step, whatever path brought it in.
        """
        fresh, self._fresh = self._fresh, []
        return fresh or []

    def restore(self, events: list) -> int:
        """Re-admit events from this replica's own durable store (restart).

        The one path that takes events under this replica's own id from
        outside: they are the ones it made before it stopped. Never for
        anything a peer sent. Returns how many were new.
        """
        if not events:
            return 0
        return self._merge_general(AWORSet.from_entries([(e.replica, e.seq, e)
                                                         for e in events]))

    def retirement(self, replica: str) -> str | None:
        """``"left"`` or ``"evicted"`` if ``replica`` is out of the cluster, else None."""
        if replica not in self._cutoff:
            return None
        return self.membership.how.get(replica, "left or was evicted")

    def frontier_holder(self) -> tuple[str, int] | None:
        """The member whose counted clock is F's floor (who holds finality back), or None."""
        counted = self.membership.counted
        low = None
        for replica in self.members():
            if replica == self.id:
                continue
            value = counted.get(replica, self.membership.joins.get(replica, 0))
            if low is None or value < low[1]:
                low = (replica, value)
        return low

    def compact(self) -> compaction.Compaction:
        """Drop settled history at or below the final frontier; return what left
        memory (see compaction.Compaction): the caller keeps it if it keeps history."""
        return compaction.compact(self)

    def observe_ack(self, replica: str, context: CausalContext) -> None:
        """``replica`` (a peer, in a pull) has seen everything in ``context``."""
        compaction.observe_ack(self, replica, context)

    def needs_snapshot(self, delta: AWORSet) -> bool:
        """A delta from ``missing`` that names dots it cannot carry (they were compacted)."""
        return compaction.needs_snapshot(delta)

    def snapshot_state(self) -> Snapshot:
        """Everything a peer needs to stand where this replica stands."""
        return compaction.snapshot_state(self)

    def install(self, snapshot: Snapshot) -> int:
        """Stand where a snapshot's sender stood, then re-merge what was held here.

        For a newcomer, or a replica too far behind for a delta (the events it
        lacks were compacted). Returns how many events it now holds.
        """
        if not compaction.covers_what_was_dropped(self.state, snapshot.context):
            raise ReplicaError("the snapshot does not cover history this replica already "
                               "compacted; ask a peer that is further ahead")
        return compaction.install(self, snapshot)

    def newest_clock(self) -> int:
        log = self.engine.log
        return log[-1].clock if log else 0

    def context(self) -> CausalContext:
        return self.state.context.copy()

    def missing(self, context: CausalContext, limit: int | None = None) -> AWORSet:
        """The delta a peer with ``context`` lacks (at most ``limit`` events: a page)."""
        return self.state.missing(context, limit)

    def snapshot(self) -> AWORSet:
        """The whole state as one delta."""
        return self.state.copy()

    # -- views -----------------------------------------------------------------
    def events(self) -> list[Order | Cancel]:
        """Every event held, in position order (including ones waiting on a gap)."""
        return sorted(e for _, _, e in self.state.entries())

    def event_count(self) -> int:
        """Events held now (compaction removes settled history)."""
        return len(self.state)

    def events_total(self) -> int:
        """Every event this replica has held, compacted ones included."""
        return self._events_total

    def applied_count(self) -> int:
        return len(self.engine.log)

    def book(self, depth: int | None = None) -> Book:
        return Book(self.engine.bids.depth(depth), self.engine.asks.depth(depth))

    def fills(self) -> list[Fill]:
        return fill_views(self.engine.fills)

    def order(self, dot: Dot | str) -> OrderView | None:
        dot = parse_dot(dot) if isinstance(dot, str) else Dot(*dot)
        event = self.state.get(dot.replica, dot.seq)
        if event is None or event.kind != ORDER:
            return None
        return order_view(event, self.engine.outcome(dot.replica, dot.seq))

    def orders(self) -> list[OrderView]:
        engine = self.engine
        return [
            order_view(e, engine.outcome(e.replica, e.seq))
            for e in self.events()
            if e.kind == ORDER
        ]

    def cancel_view(self, dot: Dot | str) -> CancelView | None:
        dot = parse_dot(dot) if isinstance(dot, str) else Dot(*dot)
        event = self.state.get(dot.replica, dot.seq)
        if event is None or event.kind != CANCEL:
            return None
        return _cancel_view(event, self.engine.outcome(dot.replica, dot.seq))

    def digest(self) -> str:
        """A hash of the event set: equal on replicas holding the same events.

        Each event is hashed once (SHA-256 of its canonical CBOR) and the
        hashes are added modulo 2**256, so the digest does not depend on
        arrival order and costs O(new events) per call, not O(all events).
        The count of events is hashed in with the sum.
        """
        if self._unhashed:
            total = self._digest_sum
            dumps, sha256, from_bytes = cbor2.dumps, hashlib.sha256, int.from_bytes
            for event in self._unhashed:
                total += from_bytes(sha256(dumps(event_to_wire(event), canonical=True)).digest())
            self._digest_sum = total % _DIGEST_MODULUS
            self._unhashed = []
        return hashlib.sha256(
            b"crdtbook-digest-v1|%d|%d" % (self._events_total, self._digest_sum)
        ).hexdigest()


_DIGEST_MODULUS = 2**256


def _single_event(delta: AWORSet) -> Order | Cancel | None:
    """The event of a delta holding one event and exactly its dot, else None."""
    ((replica, seqs),) = delta.store.items()
    if len(seqs) != 1:
        return None
    ((seq, event),) = seqs.items()
    vv, cloud = delta.context.vv, delta.context.cloud
    if seq == 1:
        exact = not cloud and len(vv) == 1 and vv.get(replica) == 1
    else:
        exact = not vv and len(cloud) == 1 and len(cloud.get(replica, ())) == 1 \
            and seq in cloud[replica]
    return event if exact else None


__all__ = [
    "Book", "CancelView", "Cancelled", "Fill", "OrderView", "Placed", "Replica", "ReplicaError",
    "Snapshot", "format_amount",
]
