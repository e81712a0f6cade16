"""The door: what a replica lets in from the wire, and how it signs what it sends.

Theory of operation
-------------------
Peers exchange *blocks* of signed feeds (feed.py) and *signed claims*. A
``Door`` stands in front of one ``Replica``: it keeps, per origin, the tip of
the feed held here, and admits a message in two steps.

1. **Check everything, change nothing.** Blocks are taken in message order.
   A block is *verified* when it starts right after the tip held here (or
   after an earlier block of the same message), its origin's public key is
   known (a join event held here, or one in an earlier block of the same
   message, or the block is the cluster's founding self-join and this
   replica knows no founder yet), and the origin's signature of the head
   after it checks out. A bad signature refuses the whole message
   (``DoorError``): an honest relay only forwards blocks it verified. Blocks
   that cannot be placed yet or must never be (a gap, a duplicate, an origin
   not known as a member, a feed past its cutoff, an event at or below the
   final frontier F) are *skipped*, with the reason counted, and so is the
   rest of that origin's feed in the message.
2. **Merge the verified blocks** into the replica as one delta, and move the
   tips. Claims count only when signed by their replica, a member with a
   known key, and newer than the claim held.

Own blocks are made by ``seal``: the replica's new events, chained on its own
tip and signed with its key.

Rules this module keeps
-----------------------
* A refused or partly skipped message leaves no trace but counters: no tip
  moves, no key is learned, no event enters the set before step 2.
* A replica never takes events below its final frontier from anyone: an
  honest member's event can never be there (its claims promised so), so such
  an event is a broken promise and is refused, counted in ``refused``.
* The door never re-encodes a block: relays forward the origin's bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .aworset import AWORSet
from .codec import encode_body
from .events import JOIN, MEMBER
from .feed import Block, SignedClaim, Tip, claim_message, genesis, head_message, link
from .keys import owns, verify
from .replica import Replica
from .snapshot import Claim

SKIP_GAP = "gap"
SKIP_STRANGER = "not a member"
SKIP_RETIRED = "past its replica's cutoff"
SKIP_BELOW_FINAL = "at or below the final frontier"
SKIP_OVERLAP = "overlaps a block held here"
SKIP_AHEAD = "stamped too far ahead of this node's clock"


class DoorError(ValueError):
    """A message that fails verification: refused whole, nothing changed."""


class OwnFeedConflict(DoorError):
    """A validly signed block of this replica's own feed that it does not hold.

    Only this replica's key signs its blocks, so this is its own past: the
    store lost events it had sent (restored from an old backup), or another
    node runs with the same key. Either way this replica must stop.
    """


class Verified(NamedTuple):
    block: Block
    hash: bytes


class Admission(NamedTuple):
    added: int  # events new to the replica
    blocks: list[Verified]  # the blocks taken, with their hashes (to store and relay)
    skipped: Counter  # reason -> blocks skipped


class Door:
    def __init__(self, replica: Replica, sign: Callable[[bytes], bytes] | None = None) -> None:
        self.replica = replica
        self.sign = sign
        self.tips: dict[str, Tip] = {}
        self.claims: dict[str, SignedClaim] = {}  # newest verified claim per other replica
        self.refused: Counter = Counter()  # reason -> blocks refused or skipped so far
        self._own_claim: SignedClaim | None = None

    def tip(self, replica: str) -> Tip:
        tip = self.tips.get(replica)
        return tip if tip is not None else genesis(replica)

    # -- sending ---------------------------------------------------------------
    def seal(self, events: list) -> Block:
        """Chain and sign this replica's next events (consecutive, after its tip)."""
        me = self.replica.id
        tip = self.tip(me)
        if not events or events[0].seq != tip.last + 1 or any(
                e.replica != me or e.seq != tip.last + 1 + i for i, e in enumerate(events)):
            raise ValueError("seal takes this replica's next events, in seq order")
        body = encode_body(events)
        hash_ = link(tip.hash, body)
        sig = self.sign(head_message(me, events[-1].seq, hash_))
        self.tips[me] = Tip(events[-1].seq, hash_)
        return Block(me, events[0].seq, events[-1].seq, body, sig, tuple(events))

    def own_claim(self, claim: Claim) -> SignedClaim:
        held = self._own_claim
        if held is None or (held.seq, held.clock) != (claim.seq, claim.clock):
            sig = self.sign(claim_message(claim.replica, claim.seq, claim.clock))
            held = self._own_claim = SignedClaim(claim.replica, claim.seq, claim.clock, sig)
        return held

    def outgoing_claims(self, own: Claim) -> list[SignedClaim]:
        """Claims to send: this replica's own (signed now), and every verified one relayed."""
        members = set(self.replica.members())
        relayed = [c for r, c in sorted(self.claims.items()) if r in members]
        return [self.own_claim(own), *relayed]

    # -- receiving --------------------------------------------------------------
    def admit(self, blocks: Iterable[Block], claims: Iterable[SignedClaim] = (),
              clock_limit: int | None = None, may_found: bool = True) -> Admission:
        """Verify then merge; DoorError (nothing changed) if a signature is bad.

        Blocks and claims stamped past ``clock_limit`` are left for later (a
        node passes its wall clock plus a tolerance): taking them would drag
        this replica's clock, and so its own events, into the future.

        ``may_found``: whether this message may bring the cluster's founding
        self-join to a replica that knows no founder yet. Anyone can sign a
        self-join with a fresh key, so a node passes True only for the answer
        of the peer it asked to admit it: a stranger's push must not make a
        joining node a member of the stranger's own cluster.
        """
        replica = self.replica
        membership = replica.membership
        final = replica.frontier()
        learned: dict[str, bytes] = {}
        working: dict[str, Tip] = {}
        stopped: set[str] = set()  # origins whose later blocks in this message are skipped
        founding = may_found and not membership.founded
        taken: list[Verified] = []
        skipped: Counter = Counter()

        def skip(block: Block, reason: str) -> None:
            skipped[reason] += 1
            stopped.add(block.replica)

        for block in blocks:
            origin = block.replica
            if origin in stopped:
                skipped[SKIP_GAP] += 1
                continue
            tip = working.get(origin) or self.tip(origin)
            if block.last <= tip.last:
                continue  # held already: a duplicate, nothing to say
            if block.first != tip.last + 1:
                skip(block, SKIP_OVERLAP if block.first <= tip.last else SKIP_GAP)
                continue
            cut = membership.cutoff.get(origin)
            if cut is not None and block.first > cut:
                skip(block, SKIP_RETIRED)
                continue
            key = membership.keys.get(origin) or learned.get(origin)
            if key is None and founding and block.first == 1:
                key = _founding_key(block)
                founding = key is None
            if key is None:
                skip(block, SKIP_STRANGER)
                continue
            hash_ = link(tip.hash, block.body)
            if not verify(key, head_message(origin, block.last, hash_), block.sig):
                raise DoorError(f"block {origin}:{block.first}-{block.last} does not carry "
                                f"its replica's signature")
            if origin == replica.id:
                raise OwnFeedConflict(
                    f"peers hold events {origin}:{block.first}-{block.last} signed with this "
                    "replica's key that this node does not have (its store lost events it "
                    "had sent, or another node runs with the same key)")
            if any(e.clock <= final and (cut is None or e.seq <= cut) for e in block.events):
                skip(block, SKIP_BELOW_FINAL)
                continue
            if clock_limit is not None and block.events[-1].clock > clock_limit:
                skip(block, SKIP_AHEAD)  # clocks increase along a valid feed: the last is top
                continue
            for event in block.events:
                if event.kind == MEMBER and event.action == JOIN and owns(event.target, event.key):
                    learned.setdefault(event.target, event.key)
            working[origin] = Tip(block.last, hash_)
            taken.append(Verified(block, hash_))

        if clock_limit is not None:
            claims = [c for c in claims if c.clock <= clock_limit]
        counted = self._verified_claims(claims, learned)
        added = 0
        if taken:
            delta = AWORSet.from_entries(
                (e.replica, e.seq, e) for v in taken for e in v.block.events)
            added = replica.merge(delta)
            self.tips.update(working)
        if counted:
            for claim in counted:
                self.claims[claim.replica] = claim
            replica.observe_claims(Claim(c.replica, c.seq, c.clock) for c in counted)
        self.refused.update(skipped)
        return Admission(added, taken, skipped)

    def _verified_claims(self, claims: Iterable[SignedClaim],
                         learned: dict[str, bytes]) -> list[SignedClaim]:
        keys = self.replica.membership.keys
        out = []
        for claim in claims:
            if claim.replica == self.replica.id:
                continue
            key = keys.get(claim.replica) or learned.get(claim.replica)
            held = self.claims.get(claim.replica)
            if key is None or (held is not None and claim.clock <= held.clock):
                continue  # a stranger's, or no news: nothing to check
            if verify(key, claim_message(claim.replica, claim.seq, claim.clock), claim.sig):
                out.append(claim)
            else:
                self.refused["claim without its replica's signature"] += 1
        return out


def _founding_key(block: Block) -> bytes | None:
    """The key in a feed's first event when that is a founding self-join, else None."""
    first = block.events[0]
    if (first.kind == MEMBER and first.action == JOIN and first.target == block.replica
            and owns(block.replica, first.key)):
        return first.key
    return None


__all__ = ["Admission", "Door", "DoorError", "OwnFeedConflict", "Verified"]
