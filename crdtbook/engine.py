"""Engine: price-time matching over events in position order, with an undo log.

Theory of operation
-------------------
The engine holds the result of applying a sorted list of events, ``log``, one
after another, to an empty book. ``by_dot`` maps each applied event's dot to
its outcome, which records what the event did with just enough to undo it:

* an order keeps its ``Resting`` record: its first fill index (fills are
  appended, so "undo" truncates the fill list; each fill names its maker and
  quantity, which is all it takes to restore the maker), and whether its
  remainder rests (then it is the tail of its level);
* a cancel keeps the order it removed, the quantity and the index it had in
  its level;
* a valid leave or evict keeps, for each order of its target it removed, the
  same three facts, in the order it removed them.

Undo runs strictly in reverse, so when an event is undone the book is exactly
as that event left it, and these few facts restore the state before it.

``update(add, drop)`` is the only mutator. New events that sort after
everything applied are simply applied (O(log n) each). Anything else rewinds:
the log is cut at the earliest affected position (``bisect`` on the event
tuples), the undone suffix is merged with the new events (less the dropped
ones), and that is replayed. The result is identical to replaying the whole
set from scratch, which is what the tests check against a reference engine.

Matching rules (price-time priority, trade at the maker's price):

* ``limit``: trades while the best opposite price crosses its limit; the
  remainder rests at its limit, last in its level.
* ``market``: trades at any price; the remainder is dropped.
* ``ioc``: like limit; the remainder is dropped.
* ``fok``: executes like ioc if the quantity available at or better than its
  limit covers it all; otherwise rejected without fills.
* ``post_only``: rejected if it would trade on arrival; otherwise rests.
* cancel: removes its target's resting remainder; a no-op if nothing rests.
* leave / evict (valid ones): removes the resting remainder of every order of
  its target, in seq order (cancel-on-disconnect: nobody trades against a
  participant that can no longer manage its orders).

Rules this module keeps
-----------------------
* No I/O, no clocks, no randomness; every iteration is over sorted or
  position-ordered data.
* Semantic rejections are decided from the event set alone (``invalid`` is
  filled by the replica from each replica's seq chain; the rest here), so
  every replica rejects the same events for the same reasons.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .book import BookSide, Resting
from .events import (
    BUY,
    CANCEL,
    EVICT,
    FOK,
    JOIN,
    LEAVE,
    LIMIT,
    MARKET,
    MEMBER,
    POST_ONLY,
    Cancel,
    Member,
    Order,
)

REASON_POST_ONLY = "post_only order would trade on arrival"
REASON_FOK = "fok order cannot be filled in full"
REASON_FOREIGN = "a replica may only cancel its own orders"
REASON_NOT_EARLIER = "a cancel must target an earlier event of its own replica"
REASON_LEAVE = "a replica leaves only itself, as its own last event"
REASON_EVICT_SELF = "a replica cannot evict itself (it leaves instead)"
# an event past its replica's conviction cut (proofs.py): the replica signed two
# versions of its feed, or broke a signed promise, at or before this event
REASON_EQUIVOCATION = "equivocation"
# why a valid leave or evict removed an order's remainder (Resting.cancel_reason)
REASON_OWNER_LEFT = "owner left"
REASON_OWNER_EVICTED = "owner evicted"
CANCEL_REASONS = (REASON_OWNER_LEFT, REASON_OWNER_EVICTED)


class MemberOutcome:
    """A membership event is valid or rejected (with a reason).

    A valid leave or evict cancels its target's resting orders: ``cancelled``
    holds (order, quantity removed, index in its level) for each, in the order
    they were removed, so undo can put them back in reverse.
    """

    __slots__ = ("event", "reason", "cancelled")

    def __init__(self, event: Member, reason: str | None) -> None:
        self.event = event
        self.reason = reason
        self.cancelled: list[tuple[Resting, int, int]] = []

    @property
    def status(self) -> str:
        return "rejected" if self.reason is not None else "applied"


def member_reason(event: Member) -> str | None:
    """Rules a membership event must keep, whatever else is in the set."""
    if event.action == LEAVE and (event.target != event.replica or event.last_seq != event.seq):
        return REASON_LEAVE
    if event.action == EVICT and event.target == event.replica:
        return REASON_EVICT_SELF
    return None


class CancelOutcome:
    """What a cancel did. No ``__init__``, like ``Resting`` (see there): the
    engine sets every slot; anyone else makes one with ``CancelOutcome.of``."""

    __slots__ = ("event", "target", "removed", "index", "reason")

    @staticmethod
    def of(event: Cancel) -> CancelOutcome:
        outcome = CancelOutcome()
        outcome.event = event
        outcome.target = None  # the order's Resting record, if it targets one
        outcome.removed = 0  # quantity taken off the book
        outcome.index = 0  # where the target stood in its level
        outcome.reason = None
        return outcome

    @property
    def status(self) -> str:
        if self.reason is not None:
            return "rejected"
        return "cancelled" if self.removed else "noop"


class Engine:
    def __init__(self) -> None:
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        # fills as (taker, maker, price, qty) with Resting records, in replay order
        self.fills: list[tuple[Resting, Resting, int, int]] = []
        self.log: list[Order | Cancel] = []
        # compaction (see compact()): fills before fills_base are gone; retained
        # holds orders at or below the frontier still needed (resting, or
        # referenced by a fill or cancel that could still be undone)
        self.fills_base = 0
        self.retained: list[Resting] = []
        self.floor = 0  # clock of the last compaction cut: the log holds only later events
        self.by_dot: dict[str, dict[int, Resting | CancelOutcome]] = {}
        # replica -> {seq: reason}: events rejected by their seq chain
        self.invalid: dict[str, dict[int, str]] = {}
        # cost counters (the node exports them): rewinds, and events undone by them
        # (each re-applied unless withdrawn); kept across reset()
        self.rewinds = 0
        self.replayed = 0

    # -- the one mutator -----------------------------------------------
    def update(self, add: list, drop: list | None = None) -> None:
        """Apply new events ``add`` (sorted) and withdraw applied events ``drop``."""
        log = self.log
        if not drop:
            if not add:
                return
            if not log or add[0] > log[-1]:
                self.apply_run(add)
                return
            first = add[0]
        else:
            first = min(drop) if not add else min(add[0], min(drop))
        suffix = self._rewind(bisect_left(log, first))
        self.rewinds += 1
        self.replayed += len(suffix)
        if drop:
            gone = set(drop)
            suffix = [e for e in suffix if e not in gone]
        suffix.extend(add)
        suffix.sort()
        self.apply_run(suffix)

    def reset(self) -> None:
        invalid, rewinds, replayed = self.invalid, self.rewinds, self.replayed
        self.__init__()
        self.invalid, self.rewinds, self.replayed = invalid, rewinds, replayed

    # -- apply -----------------------------------------------------------
    def apply(self, event: Order | Cancel) -> None:
        """Apply one event that sorts after every applied one (the caller checked).

        The replica's in-order merge paths call ``apply_order`` (or
        ``apply_other``) themselves, with the fields they have read."""
        if len(event) != 9:  # a cancel (6 fields) or a membership event (8), not an order
            self.apply_other(event, event[3])
            return
        # One unpacking: an event is a tuple subclass, which CPython indexes and
        # unpacks the generic way, so each event[i] costs a call.
        _, replica, seq, _, side, kind, price, qty, _ = event
        self.apply_order(event, replica, seq, side, kind, price, qty)

    def apply_order(self, event: Order, replica: str, seq: int, side: str, kind: str,
                    price: int, qty: int) -> None:
        """``apply`` of an order whose fields the caller has read already.

        The replica's in-order merge paths read an event's fields once, for
        themselves and for this (reading them twice cost ``merge_event`` about
        5%). It is ``apply_run`` for one order, written out (keep the two
        alike: the tests hold them to the same outcomes): a loop of one, or a
        call to share the matching, costs it a tenth more.
        """
        fills = self.fills
        taker = Resting()  # Resting.of(event, start), without its call: every slot set here
        taker.event = event
        taker.remaining = taker.filled = 0
        taker.reason = taker.cancel_reason = None
        taker.fills_start = self.fills_base + len(fills)
        self.log.append(event)
        try:
            self.by_dot[replica][seq] = taker
        except KeyError:
            self.by_dot[replica] = {seq: taker}
        if self.invalid:
            reason = self._chain_reason(event)
            if reason is not None:
                taker.reason = reason
                return
        remaining = qty
        is_buy = side == BUY
        if is_buy:
            opposite, own = self.asks, self.bids
        else:
            opposite, own = self.bids, self.asks
        best = opposite.best
        # Most orders do not cross: decide that first, with one comparison.
        if best is None or (kind != MARKET and ((best > price) if is_buy else (best < price))):
            # two string ==, not `in` a tuple: about 230 instructions fewer per event
            if kind == LIMIT or kind == POST_ONLY:  # noqa: SIM109
                taker.remaining = remaining
                level = own.levels.get(price)
                if level is None:
                    own.open(price, taker)
                else:
                    level.append(taker)
            elif kind == FOK:
                taker.reason = REASON_FOK
            return
        if kind == POST_ONLY:
            taker.reason = REASON_POST_ONLY
            return
        if kind == FOK and _available(opposite, is_buy, price, remaining) < remaining:
            taker.reason = REASON_FOK
            return
        market = kind == MARKET
        levels = opposite.levels
        while remaining and best is not None:
            if not market and ((best > price) if is_buy else (best < price)):
                break
            level = levels[best]
            while remaining and level:
                maker = level[0]
                quantity = maker.remaining
                if quantity > remaining:
                    quantity = remaining
                maker.remaining -= quantity
                maker.filled += quantity
                remaining -= quantity
                fills.append((taker, maker, best, quantity))
                if not maker.remaining:
                    level.popleft()
            if not level:
                opposite.drop_best()
                best = opposite.best
        taker.filled = qty - remaining
        if remaining and kind == LIMIT:  # market, ioc and fok drop what is left
            taker.remaining = remaining
            own.append(price, taker)

    def apply_run(self, events) -> None:
        """Apply events, in position order, that all sort after every applied one
        (the caller checked: ``update`` does).

        ``apply`` over a whole run (a replay, a push) in one loop, with the
        engine's parts held in locals: a tenth fewer instructions per event.
        """
        log_append = self.log.append
        by_dot = self.by_dot
        fills = self.fills
        record_fill = fills.append
        invalid = self.invalid
        bids, asks = self.bids, self.asks
        base = self.fills_base  # only compaction moves it
        for event in events:
            if len(event) != 9:  # as in apply
                self.apply_other(event, event[3])
                continue
            taker = Resting()  # as in apply_order
            taker.event = event
            taker.remaining = taker.filled = 0
            taker.reason = taker.cancel_reason = None
            taker.fills_start = base + len(fills)
            log_append(event)
            _, replica, seq, _, side, kind, price, qty, _ = event  # as in apply
            try:
                by_dot[replica][seq] = taker
            except KeyError:
                by_dot[replica] = {seq: taker}
            if invalid:
                reason = self._chain_reason(event)
                if reason is not None:
                    taker.reason = reason
                    continue
            remaining = qty
            is_buy = side == BUY
            if is_buy:
                opposite, own = asks, bids
            else:
                opposite, own = bids, asks
            best = opposite.best
            if best is None or (kind != MARKET and ((best > price) if is_buy else (best < price))):
                if kind == LIMIT or kind == POST_ONLY:  # noqa: SIM109 (as in apply_order)
                    taker.remaining = remaining
                    level = own.levels.get(price)
                    if level is None:
                        own.open(price, taker)
                    else:
                        level.append(taker)
                elif kind == FOK:
                    taker.reason = REASON_FOK
                continue
            if kind == POST_ONLY:
                taker.reason = REASON_POST_ONLY
                continue
            if kind == FOK and _available(opposite, is_buy, price, remaining) < remaining:
                taker.reason = REASON_FOK
                continue
            market = kind == MARKET
            levels = opposite.levels
            while remaining and best is not None:
                if not market and ((best > price) if is_buy else (best < price)):
                    break
                level = levels[best]
                while remaining and level:
                    maker = level[0]
                    quantity = maker.remaining
                    if quantity > remaining:
                        quantity = remaining
                    maker.remaining -= quantity
                    maker.filled += quantity
                    remaining -= quantity
                    record_fill((taker, maker, best, quantity))
                    if not maker.remaining:
                        level.popleft()
                if not level:
                    opposite.drop_best()
                    best = opposite.best
            taker.filled = qty - remaining
            if remaining and kind == LIMIT:  # market, ioc and fok drop what is left
                taker.remaining = remaining
                own.append(price, taker)

    def apply_other(self, event: Cancel | Member, kind: str) -> None:
        """Apply a cancel or a membership event (the caller checked the order)."""
        outcome = (self._apply_cancel(event) if kind == CANCEL
                   else self._apply_member(event))
        self.log.append(event)
        try:
            self.by_dot[event[1]][event[2]] = outcome
        except KeyError:  # the first event of its replica
            self.by_dot[event[1]] = {event[2]: outcome}

    def _chain_reason(self, event: Order | Cancel) -> str | None:
        if self.invalid:
            bad = self.invalid.get(event.replica)
            if bad:
                return bad.get(event.seq)
        return None

    def _apply_cancel(self, cancel: Cancel) -> CancelOutcome:
        outcome = CancelOutcome()  # CancelOutcome.of(cancel) without its call
        outcome.event = cancel
        outcome.target = outcome.reason = None
        outcome.removed = outcome.index = 0
        reason = self._chain_reason(cancel) if self.invalid else None
        target = None
        if reason is None:
            if cancel.target_replica != cancel.replica:
                reason = REASON_FOREIGN
            elif cancel.target_seq >= cancel.seq:
                reason = REASON_NOT_EARLIER
            else:
                target = self.by_dot.get(cancel.replica, {}).get(cancel.target_seq)
        if reason is not None:
            outcome.reason = reason
            return outcome
        if not isinstance(target, Resting):
            # Not an order, or an order settled and compacted away: nothing rests,
            # so nothing to do, whichever it was (a replica that compacted cannot
            # tell, so no replica may).
            return outcome
        outcome.target = target
        if target.remaining:
            side = self.bids if target.event.side == BUY else self.asks
            outcome.index = side.take(target.event.price, target)
            outcome.removed = target.remaining
            target.remaining = 0
        return outcome

    def _apply_member(self, event: Member) -> MemberOutcome:
        outcome = MemberOutcome(event, self._chain_reason(event) or member_reason(event))
        if outcome.reason is not None or event.action == JOIN:
            return outcome
        seqs = self.by_dot.get(event.target)
        if not seqs:
            return outcome
        why = REASON_OWNER_LEFT if event.action == LEAVE else REASON_OWNER_EVICTED
        cancelled = outcome.cancelled
        for seq in sorted(seqs):
            order = seqs[seq]
            if isinstance(order, Resting) and order.remaining:
                side = self.bids if order.event.side == BUY else self.asks
                index = side.take(order.event.price, order)
                cancelled.append((order, order.remaining, index))
                order.remaining = 0
                order.cancel_reason = why
        return outcome

    # -- undo --------------------------------------------------------------
    def _rewind(self, index: int) -> list:
        """Undo log[index:]; return those events in position order.

        An order's undo is written out in the loop (a rewind undoes a few
        hundred of a node's own orders whenever a peer's push lands behind
        them): its fields read by one unpacking and the engine's parts held in
        locals, where a call per order with its attribute reads cost about a
        third more. Cancels and membership events keep their own undo."""
        log, by_dot = self.log, self.by_dot
        undone = log[index:]
        del log[index:]
        fills = self.fills
        base = self.fills_base  # only compaction moves it
        bids, asks = self.bids, self.asks
        for event in reversed(undone):  # strictly in reverse: see the module doc
            if len(event) != 9:  # a cancel (6 fields) or a membership event (8)
                outcome = by_dot[event[1]].pop(event[2])
                if event[3] == CANCEL:
                    self._undo_cancel(outcome)
                elif outcome.cancelled:
                    self._undo_member(outcome)
                continue
            _, replica, seq, _, side, _, price, _, _ = event
            taker = by_dot[replica].pop(seq)
            is_buy = side == BUY
            if taker.remaining:
                (bids if is_buy else asks).pop_tail(price)
            start = taker.fills_start - base
            if len(fills) > start:
                opposite = asks if is_buy else bids
                for _, maker, level, quantity in reversed(fills[start:]):
                    if not maker.remaining:
                        opposite.push_head(level, maker)
                    maker.remaining += quantity
                    maker.filled -= quantity
                del fills[start:]
        return undone

    def _undo_cancel(self, outcome: CancelOutcome) -> None:
        if outcome.removed:
            target = outcome.target
            target.remaining = outcome.removed
            side = self.bids if target.event.side == BUY else self.asks
            side.put_back(target.event.price, target, outcome.index)

    def _undo_member(self, outcome: MemberOutcome) -> None:
        for order, removed, index in reversed(outcome.cancelled):
            order.remaining = removed
            order.cancel_reason = None
            side = self.bids if order.event.side == BUY else self.asks
            side.put_back(order.event.price, order, index)
        outcome.cancelled = []

    # -- compaction ----------------------------------------------------------
    def compact(self, final_clock: int, keep=None) -> tuple[list, list]:
        """Forget what can never change: history at or below ``final_clock`` (F).

        No event at or below F can arrive any more, so the log's prefix up to F
        can never be rewound: it is dropped, and so are the fills whose taker is
        at or below F (a prefix of the fills) and the outcomes of settled events.
        Orders still resting, or that a later fill or cancel could give back
        quantity to on undo, are retained; so is anything ``keep(event)`` asks
        for (events some peer has not acknowledged yet). Returns (the outcomes
        dropped, in position order: they are final; the fills dropped).
        """
        cut = bisect_left(self.log, (final_clock + 1,))
        fills = self.fills
        done = bisect_right(fills, final_clock, key=lambda f: f[0].event.clock)
        if not cut and not done and not self.retained:
            return [], []
        prefix = self.log[:cut]
        del self.log[:cut]
        self.floor = max(self.floor, final_clock)
        dropped_fills = fills[:done]
        del fills[:done]
        self.fills_base += done
        needed = {id(f[1]) for f in fills}
        for event in self.log:
            if event.kind == CANCEL:
                target = self.by_dot[event.replica][event.seq].target
                if target is not None:
                    needed.add(id(target))
            elif event.kind == MEMBER:  # a leave or evict that could still be undone
                for order, _, _ in self.by_dot[event.replica][event.seq].cancelled:
                    needed.add(id(order))
        candidates = [self.by_dot[e.replica][e.seq] for e in prefix] + self.retained
        for outcome in candidates:  # a leave or evict below the cut is never undone
            if isinstance(outcome, MemberOutcome):
                outcome.cancelled = []
        self.retained = []
        gone = []
        for outcome in candidates:
            if isinstance(outcome, Resting) and (outcome.remaining or id(outcome) in needed):
                self.retained.append(outcome)
                continue
            if keep is not None and keep(outcome.event):
                self.retained.append(outcome)
                continue
            event = outcome.event
            del self.by_dot[event.replica][event.seq]
            gone.append(outcome)
        return gone, dropped_fills

    def in_window(self, event) -> bool:
        """Whether ``event`` sorts after the last compaction cut (it can be replayed)."""
        return event.clock > self.floor

    # -- queries -----------------------------------------------------------
    def outcome(self, replica: str, seq: int) -> Resting | CancelOutcome | None:
        return self.by_dot.get(replica, {}).get(seq)



def _available(side: BookSide, is_buy: bool, limit: int, wanted: int) -> int:
    """Resting quantity at prices crossing ``limit``, counted until ``wanted``."""
    total = 0
    prices = side.prices if is_buy else reversed(side.prices)
    for price in prices:
        if (price > limit) if is_buy else (price < limit):
            break
        for order in side.levels[price]:
            total += order.remaining
            if total >= wanted:
                return total
    return total
