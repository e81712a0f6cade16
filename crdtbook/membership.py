"""Membership: who counts for the final frontier, and what each has promised.

Theory of operation
-------------------
The final frontier F is the clock at or below which every event is known
here, so no fill at or below it can change. Knowing that needs two things,
both kept here:

* who the members are. Membership is itself replicated as events (join,
  leave, evict) that the replica applies in position order; this object
  holds their effect: the earliest valid join clock of each replica, and for
  one that left or was evicted, the last seq of it that counts (its cutoff).
  Every member joins through an event of an earlier member, back to the
  cluster's founding self-join.
* how far each member is known. For each member, the clock *counted* for
  it: its last contiguous event here, or a claim (a promise of no new event
  at or below a clock after a seq) once every event up to the claim's seq is
  held, and never less than its join.

``floor`` is the minimum counted clock over the members, or None while
membership is not knowable from what is held here. The replica keeps F
itself (the merge path checks every event against it) and only ever raises
it to the floor.

Rules this module keeps
-----------------------
* A counted clock never goes down: once a claim counted, its promise stands
  even after a newer claim (not yet countable) replaced it.
* No floor without the founder's join and a join for every member: a
  replica that produced events without a join held here could be a member
  missing from the minimum.
* Iteration is over sorted names only.
"""

from __future__ import annotations

from collections.abc import Iterable

from .aworset import AWORSet
from .clock import LOGICAL_BITS, MAX_CLOCK, HybridClock
from .context import CausalContext
from .events import JOIN, LEAVE, Member
from .keys import owns
from .snapshot import Claim


class Membership:
    """Join clocks, cutoffs, claims and counted clocks of one replica's view."""

    def __init__(self, replica_id: str) -> None:
        self.id = replica_id
        self.joins: dict[str, int] = {}  # earliest valid join clock per replica
        self.cutoff: dict[str, int] = {}  # last seq that counts, once left or evicted
        self.how: dict[str, str] = {}  # "left", "evicted" or "convicted", for whoever has a cutoff
        # conviction cut per replica proven to equivocate (proofs.py): not an event's
        # effect but a proof's, so it survives reset() and bounds every cutoff
        self.convicted: dict[str, int] = {}
        self.keys: dict[str, bytes] = {}  # public key of each replica admitted with one
        self.claimed: dict[str, Claim] = {}  # latest claim heard from each peer
        self.counted: dict[str, int] = {}  # clock counted per peer (never decreases)
        self.founded = False  # the cluster's founding self-join is held here

    def reset(self) -> None:
        """Forget every membership event's effect (the replica re-applies them all).

        Claims and convictions stay: they come from peers' exchanges and proofs,
        not from events.
        """
        self.joins.clear()
        self.cutoff.clear()
        self.how.clear()
        for target, cut in self.convicted.items():
            self.cutoff[target] = cut
            self.how[target] = "convicted"
        self.keys.clear()
        self.counted.clear()
        self.founded = False

    def apply(self, event: Member) -> int | None:
        """Take a valid membership event into account; return a newly lowered cutoff.

        A join lowers its target's join clock; a leave or evict lowers its
        target's cutoff, and then the replica must reject the target's events
        after it (returns that cutoff). None when nothing else has to change.
        """
        target = event.target
        if event.action == JOIN:
            if event.clock < self.joins.get(target, event.clock + 1):
                self.joins[target] = event.clock
            if owns(target, event.key):  # a key that is not the target's is ignored
                self.keys[target] = event.key
            if target == event.replica:
                self.founded = True  # the cluster's founding self-join
            return None
        cut = event.last_seq
        if cut >= self.cutoff.get(target, cut + 1):
            return None
        self.cutoff[target] = cut
        self.how[target] = "left" if event.action == LEAVE else "evicted"
        return cut

    def convict(self, target: str, cut: int) -> bool:
        """Take a conviction cut (a proof's fault seq - 1); True if it is new or lower.

        The cutoff becomes the least of the leave/evict cuts and the conviction
        cut; a conviction at or below every other cut names it ``"convicted"``,
        whichever came first.
        """
        if cut >= self.convicted.get(target, cut + 1):
            return False
        self.convicted[target] = cut
        if cut <= self.cutoff.get(target, cut):
            self.cutoff[target] = cut
            self.how[target] = "convicted"
        return True

    def is_member(self, replica: str, context: CausalContext) -> bool:
        if replica in self.cutoff:
            return False
        return replica in self.joins or context.contiguous(replica) > 0

    def members(self, context: CausalContext) -> list[str]:
        """Replicas that joined or produced events and have not (fully) left."""
        names = set(context.vv) | set(context.cloud) | set(self.joins)
        cutoff = self.cutoff
        return [
            r for r in sorted(names)
            if r not in cutoff or context.contiguous(r) < cutoff[r]
        ]

    def can_finalize(self, members: list[str]) -> bool:
        """F may advance only when membership is knowable from what is held here.

        Every member joins through an event of an earlier member, back to the
        cluster's founding self-join: holding the founder's join, and counting
        each known member's claim, means holding every join at or below F, so
        no member can be missing from the minimum. A replica that produced
        events without a join held here could be one: then F waits.
        """
        if not self.founded:
            return False
        return all(r in self.joins for r in members)

    # -- claims ------------------------------------------------------------------
    def claim(self, clock: HybridClock, context: CausalContext, now_ms: int) -> Claim:
        """This replica's promise: no new event of it at or below the returned clock.

        Advances the hybrid clock to ``now_ms`` so the promise keeps up with
        real time (a heartbeat when idle).
        """
        candidate = now_ms << LOGICAL_BITS
        if clock.last < candidate <= MAX_CLOCK:
            clock.last = candidate
        return Claim(self.id, context.contiguous(self.id), clock.last)

    def claims(self, clock: HybridClock, context: CausalContext) -> list[Claim]:
        """Every claim known here (max-merged), this replica's own included."""
        own = Claim(self.id, context.contiguous(self.id), clock.last)
        return sorted([own, *(c for r, c in self.claimed.items() if r != self.id)])

    def observe_claims(self, claims: Iterable[Claim]) -> None:
        for claim in claims:
            if claim.replica == self.id:
                continue
            held = self.claimed.get(claim.replica)
            if held is None or claim.clock > held.clock:
                self.claimed[claim.replica] = claim

    # -- the floor under F ---------------------------------------------------------
    def floor(self, state: AWORSet, own_clock: int) -> int | None:
        """The least clock counted for any member, or None if F cannot move now.

        For this replica itself that is its own clock (its next event is
        later); for a peer, the best of its join, its last contiguous event
        here, and its latest claim whose seq is held.
        """
        cc = state.context
        store = state.store
        members = self.members(cc)
        if not self.can_finalize(members):
            return None
        low = None
        for replica in members:
            if replica == self.id:
                counted = own_clock
            else:
                counted = self.joins.get(replica, 0)
                top = cc.vv.get(replica, 0)
                if top:
                    event = store.get(replica, {}).get(top)
                    if event is not None and event.clock > counted:
                        counted = event.clock
                claim = self.claimed.get(replica)
                if claim is not None and claim.seq <= top and claim.clock > counted:
                    counted = claim.clock
                # Once counted, a claim's promise stands even after a newer claim
                # (not yet countable) replaced it in the table.
                previous = self.counted.get(replica, 0)
                if counted > previous:
                    self.counted[replica] = counted
                else:
                    counted = previous
            if low is None or counted < low:
                low = counted
        return low


__all__ = ["Membership"]
