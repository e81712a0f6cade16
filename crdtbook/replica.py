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

* ``place`` / ``cancel`` create a local event and return the delta to send
  with its view; ``place_many`` places a batch, checked whole first (a bad
  order refuses it before anything is placed), with one delta for it all;
* ``merge(delta)`` joins a delta from a peer (or a decoded pull answer);
* ``missing(context)`` answers a peer's pull with exactly what it lacks;
* ``book``, ``fills``, ``order``, ``orders``, ``events``, ``digest``.

Time comes in as ``now_ms`` arguments: the replica never reads a clock.

This module keeps placing (a hot path) and the facade's calls; the other
concerns live beside it and the facade delegates to them:

    merging      Merging (the base class): merge, admission, chain checks
    membership   Membership: joins, cutoffs, claims, the floor under F
    compaction   compact, snapshot_state, install (functions of a Replica)
    views        the NamedTuples callers get, built from engine outcomes
    snapshot     Claim and Snapshot, shared with the codec

Rules this module keeps
-----------------------
* The final frontier F never moves back, and no event at or below it is
  admitted; both are counted (``frontier_regressions``,
  ``frontier_violations``) rather than trusted.
* The attributes merging.py's hot path reads stay plain attributes of the
  replica (``_cutoff`` is the membership's own dict, ``_final`` is F itself).
* Local events are admitted by the same rules as a peer's: ``_merge_own``
  takes the fast way only where those rules cannot refuse (the next own seq,
  a fresh tick past every clock held) and hands anything else to
  ``_merge_one``.
* The origin path checks each field once (``_checked_order``, with place's
  refusals and messages) and builds the event tuple from the checked fields;
  nothing is checked again, nothing re-parsed. Its views come straight from
  the engine's outcome; the delta is made only if asked for (``EventsDelta``).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable
from itertools import repeat
from operator import is_, itemgetter

import cbor2

from . import compaction
from .amount import _RECENT as amount_memo
from .amount import format_amount, parse_amount
from .aworset import AWORSet
from .clock import MAX_CLOCK, HybridClock
from .codec import event_to_wire
from .context import CausalContext
from .dot import MAX_SEQ, Dot, check_replica, parse_dot
from .engine import Engine
from .events import (
    CANCEL,
    EVICT,
    JOIN,
    LEAVE,
    MARKET,
    MAX_ACCOUNT_LEN,
    ORDER,
    SIDES,
    TYPES,
    Cancel,
    Member,
    Order,
    check_account,
    make_member,
)
from .membership import Membership
from .merging import Merging, ReplicaError
from .snapshot import Claim, Snapshot
from .views import (
    Book,
    Cancelled,
    CancelView,
    EventsDelta,
    Fill,
    OrderView,
    Placed,
    fill_views,
    order_view,
    taker_fills,
)
from .views import cancel_view as _cancel_view


class Replica(Merging):
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
        self._uncounted = 0  # of those, events past their origin's cutoff (not in the digest)
        self._compacted = False
        self._acks: dict[str, CausalContext] = {}  # per peer replica: its last pull's context
        self.forged_conflicts = 0
        # events rejected by a conviction (merging.convict) though at or below F
        # here: the equivocator's doing, so counted apart from frontier_violations
        self.conviction_retractions = 0
        self.needs_replay = False  # a conviction reached into compacted history
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
        me = self.id
        if me in self._cutoff:
            self._still_here()  # raises
        side, type, price_units, units, account = _checked_order(side, qty, price, type, account)
        # the seq and the tick inlined: this is the origin path of every order
        seq = self.state.context.vv.get(me, 0) + 1
        if seq > MAX_SEQ:
            raise ReplicaError(f"replica {me} has used every seq")
        try:
            clock = self.clock.tick(now_ms)
        except OverflowError as exc:
            raise ReplicaError(f"cannot stamp a new event: {exc}") from None
        order = _new(Order, (clock, me, seq, ORDER, side, type, price_units, units, account))
        self._merge_own(order)
        placed = _blank(Placed)  # Placed(order, *views) without its __init__'s call
        placed._delta = order
        placed.order, placed.fills = self._placed_views(order, me, seq)
        return placed

    def place_many(self, orders: Iterable[tuple], now_ms: int = 0) -> list[Placed]:
        """Place a batch of orders, each ``(side, qty, price, type, account)``.

        Every order is checked before any is placed: a bad one raises
        ``BatchOrderError`` (a ReplicaError saying which, with ``index``) and
        nothing changes; so does a clock that cannot stamp them all. The
        orders are then placed in the given order, exactly as by ``place`` one
        after another (each view and its fills as of its own placing), and
        every returned ``Placed`` carries the same delta: the whole batch, one
        message to send (not one per order).
        """
        self._still_here()
        checked = []
        for index, order in enumerate(orders):
            try:
                side, qty, price, kind, account = order
                checked.append(_checked_order(side, qty, price, kind, account))
            except ReplicaError as exc:
                raise BatchOrderError(index, str(exc)) from None
            except (TypeError, ValueError):
                raise BatchOrderError(index, "an order is (side, qty, price, type, account), "
                                      f"got {_shown_order(order)}") from None
        if not checked:
            return []
        clock = self.clock
        if clock.peek(now_ms) + len(checked) - 1 > MAX_CLOCK:  # ticks cannot fail below
            raise ReplicaError(f"cannot stamp {len(checked)} new events: the hybrid clock "
                               "would pass the 63-bit range")
        # The event built here, _new_seq and _placed_views inlined, and each
        # Placed made without its __init__: four frames an order on the batch's
        # hot loop (keep it alike with place; tests/test_place_many.py holds
        # the two to the same events, views and refusals).
        me, tick, merge_own, engine = self.id, clock.tick, self._merge_own, self.engine
        made, views = [], []
        for side, type_, price, qty, account in checked:
            stamp = tick(now_ms)  # before the seq's check, as it always was here
            seq = self.state.context.vv.get(me, 0) + 1
            if seq > MAX_SEQ:
                raise ReplicaError(f"replica {me} has used every seq")
            order = _new(Order, (stamp, me, seq, ORDER, side, type_, price, qty, account))
            merge_own(order)
            made.append(order)
            dot = _new(Dot, (me, seq))
            seqs = engine.by_dot.get(me)
            outcome = seqs.get(seq) if seqs is not None else None
            fills = []
            if outcome is not None and outcome.filled:
                fills = taker_fills(engine.fills, outcome.fills_start - engine.fills_base,
                                    outcome, dot)
            views.append((order_view(order, outcome, dot), fills))
        delta = EventsDelta(made)
        out = []
        for view, fills in views:
            placed = _blank(Placed)
            placed._delta, placed.order, placed.fills = delta, view, fills
            out.append(placed)
        return out

    def _new_seq(self) -> int:
        """The seq of this replica's next event (place inlines it: its hot path)."""
        seq = self.state.context.vv.get(self.id, 0) + 1
        if seq > MAX_SEQ:
            raise ReplicaError(f"replica {self.id} has used every seq")
        return seq

    def _placed_views(self, order: Order, me: str, seq: int) -> tuple[OrderView, list[Fill]]:
        """The new order's view and its fills, straight from its engine outcome
        (``me``, ``seq``: its dot's fields, which the caller holds)."""
        dot = _new(Dot, (me, seq))
        engine = self.engine
        seqs = engine.by_dot.get(me)
        outcome = seqs.get(seq) if seqs is not None else None
        fills = []
        if outcome is not None and outcome.filled:
            fills = taker_fills(engine.fills, outcome.fills_start - engine.fills_base, outcome,
                                dot)
        return order_view(order, outcome, dot), fills

    def cancel(self, order_id: Dot | str, now_ms: int = 0) -> Cancelled:
        """Cancel an order this replica placed. Raises ReplicaError otherwise."""
        self._still_here()
        try:
            if type(order_id) is Dot:
                target = order_id
            else:
                target = parse_dot(order_id) if isinstance(order_id, str) else Dot(*order_id)
        except (TypeError, ValueError) as exc:
            raise ReplicaError(str(exc)) from None
        event = self.state.get(target.replica, target.seq)
        if event is None and self.state.context.has(target.replica, target.seq):
            raise ReplicaError(f"order {target} is settled and final; nothing rests to cancel")
        if event is None or event.kind != ORDER:
            raise ReplicaError(f"unknown order {target}")
        if target.replica != self.id:
            raise ReplicaError(f"order {target} was placed at replica {target.replica}, "
                               f"not here ({self.id}); cancel it there")
        seq = self._new_seq()  # checked before the clock moves, as place does
        clock = self._tick(now_ms)
        # The target is a held order of this replica: its replica and seq are valid.
        cancel = _new(Cancel, (clock, self.id, seq, CANCEL, event.replica, event.seq))
        self._merge_own(cancel)
        seqs = self.engine.by_dot.get(self.id)
        outcome = seqs.get(seq) if seqs is not None else None
        view = _cancel_view(cancel, outcome, _new(Dot, (self.id, seq)))
        return Cancelled(cancel, view)

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

    # -- membership and finality ---------------------------------------------
    def bootstrap(self, now_ms: int = 0, key: bytes = b"") -> AWORSet:
        """Start a new cluster: this replica admits itself (only the very first node).

        ``key`` is this replica's public key (see keys.py), carried by the join.
        """
        if self.is_member(self.id):
            raise ReplicaError(f"{self.id} is already a member")
        return self._local(self._member_event(JOIN, self.id, 0, now_ms, key))

    def join(self, target: str, now_ms: int = 0, key: bytes = b"") -> AWORSet:
        """Admit ``target`` (sponsor it). Its events will all sort after this one.

        ``key`` is the target's public key: its signatures are checked with it.
        """
        try:
            check_replica(target)
        except ValueError as exc:
            raise ReplicaError(str(exc)) from None
        if not self.is_member(self.id):
            raise ReplicaError(f"{self.id} is not a member yet and cannot admit others")
        if target in self.membership.joins:
            raise ReplicaError(f"{target} is already a member")
        return self._local(self._member_event(JOIN, target, 0, now_ms, key))

    def leave(self, now_ms: int = 0) -> AWORSet:
        """Announce that this replica stops here, so it no longer holds finality back."""
        if self.id in self._cutoff:
            raise ReplicaError(f"{self.id} has already left")
        return self._local(self._member_event(LEAVE, self.id, self._next_seq(), now_ms))

    def evict(self, target: str, now_ms: int = 0) -> AWORSet:
        """Evict a vanished replica: its events after the last one held here are rejected."""
        self._still_here()
        if target == self.id:
            raise ReplicaError("a replica cannot evict itself; it leaves instead")
        if target not in self.members():
            raise ReplicaError(f"{target} is not a current member")
        last = self.state.context.contiguous(target)
        return self._local(self._member_event(EVICT, target, last, now_ms))

    def convicted_resting(self) -> list[str]:
        """Convicted replicas (proofs.py) with orders still resting here, in order.

        A conviction is not an event, so it has no position at which to cancel
        them: a live member evicts such a replica (``evict_convicted``), and the
        evict cancels them at its own position, as any evict does.
        """
        by_dot = self.engine.by_dot
        return [r for r in sorted(self.membership.convicted)
                if any(getattr(o, "remaining", 0) for o in by_dot.get(r, {}).values())]

    def evict_convicted(self, target: str, now_ms: int = 0) -> AWORSet:
        """Evict a convicted replica at its conviction cut (cancelling its resting orders)."""
        self._still_here()
        cut = self.membership.convicted.get(target)
        if cut is None or target == self.id:
            raise ReplicaError(f"{target} is not convicted here")
        return self._local(self._member_event(EVICT, target, cut, now_ms))

    def _member_event(self, action: str, target: str, last_seq: int, now_ms: int,
                      key: bytes = b"") -> Member:
        try:
            return make_member(self._tick(now_ms), self.id, self._next_seq(), action, target,
                               last_seq, key)
        except ValueError as exc:
            raise ReplicaError(str(exc)) from None

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
        delta = AWORSet.from_entries([(e.replica, e.seq, e) for e in events])
        if not self.state.context.vv and not self.state.context.cloud:  # the first page
            added = self._merge_into_empty(delta)
            if added is not None:
                return added
        return self._merge_general(delta)

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

    def last_heard(self, replica: str) -> int:
        """The newest clock known from ``replica``: its latest claim, or what is
        counted for it (its last event here, its join); 0 if nothing."""
        claim = self.membership.claimed.get(replica)
        return max(claim.clock if claim is not None else 0,
                   self.membership.counted.get(replica, 0))

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

    def uncount(self, events) -> None:
        """Take events past their origin's newly lowered cutoff out of the digest.

        Such events have no effect anywhere, and a replica that learned of the
        cutoff first never takes them in (see door.py), so the digest covers
        only the events that count: replicas agree whichever they hold.
        """
        self.hash_pending()  # hash what is pending, under the cutoffs that held until now
        total = self._digest_sum
        for event in events:
            total -= _event_hash(event)
            self._uncounted += 1
        self._digest_sum = total % _DIGEST_MODULUS

    def digest(self) -> str:
        """A hash of the event set: equal on replicas holding the same events.

        Events past their origin's cutoff (a leave, an evict, a proven fault)
        are left out: they count nowhere, and not every replica holds them.

        Each event is hashed once (SHA-256 of its canonical CBOR) and the
        hashes are added modulo 2**256, so the digest does not depend on
        arrival order and costs O(new events) per call, not O(all events).
        The count of events is hashed in with the sum.
        """
        self.hash_pending()
        return hashlib.sha256(
            b"crdtbook-digest-v1|%d|%d" % (self._events_total - self._uncounted,
                                          self._digest_sum)
        ).hexdigest()

    def hash_pending(self, encoded: dict | None = None) -> None:
        """Add the events not hashed yet into the digest's sum (see digest()).

        ``encoded`` (``id(event)`` -> ``(event, (canonical CBOR, ...))``, see
        feedwire.encodings) hands in bytes that already exist for pending
        events, the slices of their signed blocks: the same bytes are hashed,
        so the digest's value does not depend on it. An entry counts only for
        the very event object it was cut from (never another event that
        happens to share its ``id``).
        """
        unhashed = self._unhashed
        if not unhashed:
            return
        cutoff = self._cutoff
        counted = unhashed
        if cutoff:  # events past their origin's cutoff count nowhere (see uncount)
            counted = [e for e in unhashed
                       if (cut := cutoff.get(e.replica)) is None or e.seq <= cut]
            self._uncounted += len(unhashed) - len(counted)
        # one pass of C calls over the events, no bytecode per event; an event
        # without its block's bytes is hashed by _event_hash, as it always was
        total = self._digest_sum
        if encoded:
            hits = list(map(encoded.get, map(id, counted), repeat(_NOT_SLICED)))
            if all(map(is_, map(_first, hits), counted)):
                slices = map(_first, map(_second, hits))
                total = sum(map(_from_bytes, map(_sha256_digest, map(hashlib.sha256, slices))),
                            total)
            else:  # an entry for another object under a reused id counts for nothing
                total = sum([_from_bytes(hashlib.sha256(hit[1][0]).digest())
                             if hit[0] is event else _event_hash(event)
                             for hit, event in zip(hits, counted, strict=True)], total)
        else:
            total = sum(map(_event_hash, counted), total)
        self._digest_sum = total % _DIGEST_MODULUS
        self._unhashed = []


_DIGEST_MODULUS = 2**256


class BatchOrderError(ReplicaError):
    """An order of a ``place_many`` batch is refused (so the whole batch is):
    ``index`` says which, the message why (the same as ``place``'s)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


_new = tuple.__new__  # events and dots built from checked fields, no NamedTuple __new__
_blank = object.__new__  # a slotted result whose slots the caller sets
_SIDES = {side: side for side in SIDES}  # also interns: events share the module's strings
_TYPES = {kind: kind for kind in TYPES}
_recent_amount = amount_memo.get  # the memo is cleared in place, never replaced
_type_of = type  # _checked_order's parameter `type` hides the builtin


def _interned(table: dict, value: object) -> str | None:
    try:
        return table.get(value)
    except TypeError:  # unhashable: not a side or type anyway
        return None


def _checked_order(side: object, qty: object, price: object, type: object,
                   account: object) -> tuple[str, str, int, int, str]:
    """An order's fields checked once, in place's order of refusals:
    (side, type, price units, quantity units, account), or ReplicaError."""
    try:
        checked_side = _SIDES.get(side)
        checked_type = _TYPES.get(type)
    except TypeError:  # unhashable: neither a side nor a type
        checked_side = _interned(_SIDES, side)
        checked_type = _interned(_TYPES, type)
    if checked_side is None:
        raise ReplicaError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    if checked_type is None:
        raise ReplicaError(f"type must be one of {', '.join(TYPES)}, got {type!r}")
    try:
        # The amount memo's and the account's common cases read here, without
        # the calls: three frames an order (parse_amount's own memo is the same
        # dict; anything it has not seen, and every refusal, goes its way).
        units = _recent_amount(qty) if _type_of(qty) is str else None
        if units is None:
            units = parse_amount(qty, "quantity")
        if checked_type == MARKET:
            if price is not None:
                raise ReplicaError("a market order takes no price")
            price_units = 0
        elif price is None:
            raise ReplicaError(f"a {checked_type} order needs a price")
        else:
            price_units = _recent_amount(price) if _type_of(price) is str else None
            if price_units is None:
                price_units = parse_amount(price, "price")
        if account != "" and not (_type_of(account) is str and len(account) <= MAX_ACCOUNT_LEN
                                  and account.isprintable()):
            check_account(account)  # raises, with its message
    except ReplicaError:
        raise
    except ValueError as exc:
        raise ReplicaError(str(exc)) from None
    return checked_side, checked_type, price_units, units, account


def _shown_order(order: object) -> str:
    text = repr(order)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = [
    "BatchOrderError", "Book", "CancelView", "Cancelled", "Fill", "OrderView", "Placed",
    "Replica", "ReplicaError", "Snapshot", "format_amount",
]


def _event_hash(event) -> int:
    return int.from_bytes(hashlib.sha256(cbor2.dumps(event_to_wire(event),
                                                     canonical=True)).digest())


_NOT_SLICED = (None, None)  # the miss of an ``encoded`` lookup: no event is None
_first, _second = itemgetter(0), itemgetter(1)
_sha256_digest = type(hashlib.sha256()).digest  # the C method, without a lookup per event
_from_bytes = int.from_bytes  # big-endian, as the digest has always read a hash
