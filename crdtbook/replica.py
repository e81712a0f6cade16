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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

import cbor2

from .amount import format_amount, parse_amount
from .aworset import AWORSet
from .book import Level, Resting
from .clock import HybridClock
from .codec import event_to_wire
from .context import CausalContext
from .dot import Dot, check_replica, parse_dot
from .engine import CancelOutcome, Engine
from .events import CANCEL, MARKET, ORDER, SIDES, TYPES, Cancel, Order, make_cancel, make_order

REASON_CLOCK = "clock does not increase along its replica's seq"
REASON_CLOCK_AFTER = "an earlier event of its replica was rejected for its clock"


class ReplicaError(ValueError):
    """A local request the replica refuses (unknown order, not ours, bad field)."""


class Fill(NamedTuple):
    taker: Dot
    maker: Dot
    price: int
    qty: int
    taker_side: str

    @property
    def id(self) -> str:
        return f"{self.taker}/{self.maker}"


class OrderView(NamedTuple):
    dot: Dot
    clock: int
    side: str
    type: str
    price: int  # 0 for market orders
    qty: int
    filled: int
    resting: int
    cancelled: int  # removed by a cancel, dropped (ioc/market/fok) or rejected
    status: str  # open | filled | cancelled | rejected | pending
    account: str
    reason: str | None


class CancelView(NamedTuple):
    dot: Dot
    clock: int
    target: Dot
    status: str  # cancelled | noop | rejected | pending
    removed: int
    reason: str | None


class Book(NamedTuple):
    bids: list[Level]  # best first
    asks: list[Level]  # best first


class Placed(NamedTuple):
    delta: AWORSet
    order: OrderView
    fills: list[Fill]


class Cancelled(NamedTuple):
    delta: AWORSet
    cancel: CancelView


class Replica:
    def __init__(self, replica_id: str) -> None:
        self.id = check_replica(replica_id)
        self.state = AWORSet()
        self.clock = HybridClock()
        self.engine = Engine()
        # per origin replica: clock of the last event checked along its seq chain
        self._chain_clock: dict[str, int] = {}
        # digest: a sum of per-event hashes, brought up to date lazily (see digest())
        self._digest_sum = 0
        self._unhashed: list[Order | Cancel] = []

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
        fills = [f for f in self._fill_views(self.engine.fills[fills_before:])
                 if f.taker == order.dot]
        return Placed(delta, self.order(order.dot), fills)

    def cancel(self, order_id: Dot | str, now_ms: int = 0) -> Cancelled:
        """Cancel an order this replica placed. Raises ReplicaError otherwise."""
        try:
            target = parse_dot(order_id) if isinstance(order_id, str) else Dot(*order_id)
        except ValueError as exc:
            raise ReplicaError(str(exc)) from None
        event = self.state.get(target.replica, target.seq)
        if event is None or event.kind != ORDER:
            raise ReplicaError(f"unknown order {target}")
        if target.replica != self.id:
            raise ReplicaError(f"order {target} was placed at replica {target.replica}, "
                               f"not here ({self.id}); cancel it there")
        cancel = make_cancel(self._tick(now_ms), self.id, self._next_seq(),
                             target.replica, target.seq)
        delta = self._local(cancel)
        return Cancelled(delta, self.cancel_view(cancel.dot))

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
        self._refuse(delta)
        if len(delta.store) == 1:
            single = _single_event(delta)
            if single is not None:
                return self._merge_one(single)
        return self._merge_general(delta)

    def _refuse(self, delta: AWORSet) -> None:
        """Raise ReplicaError for the deltas no honest peer sends; check before any change.

        * events under this replica's own id that it never created, or that
          differ from the ones it did (a forger, or a node restarted with a
          reused id: either way duplicate dots);
        * removals: a context covering dots the delta does not carry would
          delete events here. Removal is reserved for compaction below the
          final frontier, which this version does not do, and nothing honest
          sends one yet; accepting them would let chain checks see different
          predecessors on different replicas.
        """
        own = self.state.context.vv.get(self.id, 0)
        context = delta.context
        cloud = context.cloud.get(self.id)
        mine = delta.store.get(self.id)
        if (
            context.vv.get(self.id, 0) > own
            or (cloud and max(cloud) > own)
            or (mine and any(self.state.get(self.id, s) != e for s, e in mine.items()))
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

    def _merge_general(self, delta: AWORSet) -> int:
        state = self.state
        before = {r: state.context.contiguous(r) for r in delta.context.replicas()}
        changes = state.merge(delta)
        if not changes and all(state.context.contiguous(r) == n for r, n in before.items()):
            return 0
        if changes.added:
            self.clock.observe(max(event.clock for _, _, event in changes.added))
            self._unhashed.extend(event for _, _, event in changes.added)
        if changes.replaced:
            self._digest_sum, self._unhashed = 0, [e for _, _, e in state.entries()]
            self._rebuild()
            return len(changes.added)
        ready = []
        for replica, old in before.items():
            new = state.context.contiguous(replica)
            if new > old:
                self._check_chain(replica, old, new, ready)
        drop = [e for r, s, e in changes.removed if s <= before.get(r, 0)]
        if len(ready) > 1:
            ready.sort()
        self.engine.update(ready, drop)
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
        if seq == top + 1 and replica not in cc.cloud:
            seqs = state.store.get(replica)
            if seqs is None:
                seqs = state.store[replica] = {}
            seqs[seq] = event
            cc.vv[replica] = seq
            clock = self.clock
            if event.clock > clock.last:
                clock.last = event.clock
            self._unhashed.append(event)
            engine = self.engine
            if event.clock <= self._chain_clock.get(replica, 0) or replica in engine.invalid:
                self._check_chain(replica, top, seq, [])
            self._chain_clock[replica] = event.clock
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
        new = cc.contiguous(replica)
        if new > top:
            ready: list = []
            self._check_chain(replica, top, new, ready)
            if len(ready) > 1:
                ready.sort()
            self.engine.update(ready)
        return 1

    def _check_chain(self, replica: str, old: int, new: int, ready: list) -> None:
        """Admit seqs old+1..new of ``replica`` to the engine, checking their clocks."""
        seqs = self.state.store.get(replica, {})
        last = self._chain_clock.get(replica, 0)
        bad = self.engine.invalid.get(replica)
        for seq in range(old + 1, new + 1):
            event = seqs.get(seq)
            if event is None:  # seen and removed: it never enters the engine
                continue
            if bad:
                bad[seq] = REASON_CLOCK_AFTER
            elif event.clock <= last:
                bad = self.engine.invalid[replica] = {seq: REASON_CLOCK}
            ready.append(event)
            last = event.clock
        self._chain_clock[replica] = last

    def _rebuild(self) -> None:
        """Recompute everything from the set (after a forged duplicate dot)."""
        self._chain_clock.clear()
        self.engine.invalid.clear()
        self.engine.reset()
        ready: list = []
        for replica in self.state.context.replicas():
            self._check_chain(replica, 0, self.state.context.contiguous(replica), ready)
        ready.sort()
        self.engine.update(ready)

    def context(self) -> CausalContext:
        return self.state.context.copy()

    def missing(self, context: CausalContext) -> AWORSet:
        """The delta a peer with ``context`` lacks."""
        return self.state.missing(context)

    def snapshot(self) -> AWORSet:
        """The whole state as one delta."""
        return self.state.copy()

    # -- views -----------------------------------------------------------------
    def events(self) -> list[Order | Cancel]:
        """Every event held, in position order (including ones waiting on a gap)."""
        return sorted(e for _, _, e in self.state.entries())

    def event_count(self) -> int:
        return len(self.state)

    def applied_count(self) -> int:
        return len(self.engine.log)

    def book(self, depth: int | None = None) -> Book:
        return Book(self.engine.bids.depth(depth), self.engine.asks.depth(depth))

    def fills(self) -> list[Fill]:
        return self._fill_views(self.engine.fills)

    @staticmethod
    def _fill_views(fills: Iterable[tuple[Resting, Resting, int, int]]) -> list[Fill]:
        return [
            Fill(taker.event.dot, maker.event.dot, price, qty, taker.event.side)
            for taker, maker, price, qty in fills
        ]

    def order(self, dot: Dot | str) -> OrderView | None:
        dot = parse_dot(dot) if isinstance(dot, str) else Dot(*dot)
        event = self.state.get(dot.replica, dot.seq)
        if event is None or event.kind != ORDER:
            return None
        return self._order_view(event, self.engine.outcome(dot.replica, dot.seq))

    def orders(self) -> list[OrderView]:
        engine = self.engine
        return [
            self._order_view(e, engine.outcome(e.replica, e.seq))
            for e in self.events()
            if e.kind == ORDER
        ]

    @staticmethod
    def _order_view(event: Order, outcome: Resting | None) -> OrderView:
        if outcome is None:
            filled = resting = cancelled = 0
            status, reason = "pending", None
        else:
            filled, resting, reason = outcome.filled, outcome.remaining, outcome.reason
            cancelled = event.qty - filled - resting
            if reason is not None:
                status = "rejected"
            elif resting:
                status = "open"
            elif filled == event.qty:
                status = "filled"
            else:
                status = "cancelled"
        return OrderView(event.dot, event.clock, event.side, event.type, event.price,
                         event.qty, filled, resting, cancelled, status, event.account, reason)

    def cancel_view(self, dot: Dot | str) -> CancelView | None:
        dot = parse_dot(dot) if isinstance(dot, str) else Dot(*dot)
        event = self.state.get(dot.replica, dot.seq)
        if event is None or event.kind != CANCEL:
            return None
        outcome: CancelOutcome | None = self.engine.outcome(dot.replica, dot.seq)
        if outcome is None:
            return CancelView(event.dot, event.clock, event.target, "pending", 0, None)
        return CancelView(event.dot, event.clock, event.target, outcome.status,
                          outcome.removed, outcome.reason)

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
            b"crdtbook-digest-v1|%d|%d" % (len(self.state), self._digest_sum)
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
    "format_amount",
]
