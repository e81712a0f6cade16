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
tip and signed with its key. Every block taken or sealed goes into the
door's ``BlockIndex`` (blockindex.py): what pulls are answered from.

Equivocation (proofs.py) is made harmless here: the door holds, per origin,
the proof of its lowest fault, and convicts the origin in the replica at
that proof's cut (``Replica.convict``). Proofs are taken from peers (checked
first: a bad one refuses the message whole) or formed here: a validly
signed block that starts where a held block starts but differs (a fork), a
block breaking a signed claim held here, or a claim broken by a block held
here (a broken promise), and a peer's version of a feed compared block by
block with the one held here (``forks``, the answer to ``skips``).

Detection, as the node and the fuzzer's network drive it:

1. A pull carries the requester's ``tips``; ``answer(tips)`` returns the
   blocks it lacks and the origins whose tip is not a boundary of the feed
   held here (*suspects*): another version, or another cut, of that feed.
2. The requester's next pull carries ``skips(suspects)``: per suspect, its
   boundaries (tip, then 1, 2, 4 ... blocks back). ``fork_answer(skips)``
   returns, per origin, the newest boundary shared and the blocks held here
   after it.
3. ``admit(..., forks=...)`` compares those with the blocks held here: the
   first that differs, both signed after the same hash, is a fork proof.

Pulls also carry ``convictions()`` (origin -> cut); ``proofs_for`` answers
with the proofs the requester lacks.

Rules this module keeps
-----------------------
* A refused or partly skipped message leaves no trace but counters: no tip
  moves, no key is learned, no event enters the set before step 2.
* A replica never takes events below its final frontier from anyone: an
  honest member's event can never be there (its claims promised so), so such
  an event is a broken promise and is refused, counted in ``refused``.
* The door never re-encodes a block: relays forward the origin's bytes.
* A proof counts only once checked against its origin's key held here; the
  conviction cut is the least fault seq proven, minus one, whatever the
  order in which proofs and blocks arrived.
* A block that fails its signature after the hash held here could be a fork
  built on an earlier fork as well as a forgery: the door only sends a peer
  blocks after a boundary the peer named (``answer``), so honest answers
  never carry one; pushes of an origin's own blocks always chain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

from . import proofs as proofs_
from .aworset import AWORSet
from .blockindex import BlockIndex, Entry
from .codec import encode_body
from .events import JOIN, MEMBER
from .feed import Block, SignedClaim, Tip, claim_message, genesis, head_message, link
from .keys import owns, verify
from .proofs import Proof
from .replica import Replica
from .snapshot import Claim

SKIP_GAP = "gap"
SKIP_STRANGER = "not a member"
SKIP_RETIRED = "past its replica's cutoff"
SKIP_BELOW_FINAL = "at or below the final frontier"
SKIP_OVERLAP = "overlaps a block held here"
SKIP_AHEAD = "stamped too far ahead of this node's clock"
SKIP_PROOF_STRANGER = "proof against a replica whose key is not known here"


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
    proofs: tuple = ()  # proofs new here (taken or formed), lowering a conviction cut


class Answer(NamedTuple):
    blocks: list[Block]  # what the requester lacks, in chain order per origin
    suspects: list[str]  # origins whose requester tip is not a boundary held here


class Door:
    # keys.verify; the fuzzer's many in-process replicas share a memoized one (it is pure)
    _verify = staticmethod(verify)

    def __init__(self, replica: Replica, sign: Callable[[bytes], bytes] | None = None) -> None:
        self.replica = replica
        self.sign = sign
        self.tips: dict[str, Tip] = {}
        self.claims: dict[str, SignedClaim] = {}  # newest verified claim per other replica
        self.refused: Counter = Counter()  # reason -> blocks refused or skipped so far
        self.index = BlockIndex()
        self.proofs: dict[str, Proof] = {}  # per convicted origin, the proof of its lowest fault
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
        block = Block(me, events[0].seq, events[-1].seq, body, sig, tuple(events))
        self.index.add(tip.hash, hash_, block)
        return block

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

    # -- answering pulls (detection step 1 and 2) --------------------------------
    def block_ending(self, replica: str, last: int) -> Entry | None:
        return self.index.block_ending(replica, last)

    def blocks_after(self, replica: str, last: int, limit: int | None = None) -> list[Block]:
        return [e.block for e in self.index.blocks_after(replica, last, limit)]

    def answer(self, tips: dict[str, Tip], limit: int | None = None) -> Answer:
        """What a requester holding ``tips`` lacks (up to ``limit`` blocks per origin),
        and the origins whose tip is not a boundary of the feed held here."""
        blocks: list[Block] = []
        suspects: list[str] = []
        cutoff = self.replica.membership.cutoff
        for origin in self.index.origins():
            ours = self.tip(origin)
            theirs = tips.get(origin) or genesis(origin)
            if theirs.last > ours.last:
                continue  # the requester is ahead: it may find a fork when it answers
            if not self.index.holds(origin, theirs):
                suspects.append(origin)
                continue
            cut = cutoff.get(origin)
            for entry in self.index.blocks_after(origin, theirs.last, limit):
                if cut is not None and entry.block.first > cut:
                    break  # nobody takes those any more
                blocks.append(entry.block)
        return Answer(blocks, suspects)

    def pull_tips(self) -> dict[str, Tip]:
        """The tips a pull carries: for a convicted origin, the newest boundary at or
        below its cut (the part of its feed that counts, and must be the same
        everywhere), so that what lies past the cut is not suspected again and again."""
        tips = dict(self.tips)
        for origin, cut in sorted(self.replica.membership.convicted.items()):
            if origin in tips and tips[origin].last > cut:
                tips[origin] = self.index.boundary_at_or_below(origin, cut)
        return tips

    def skips(self, suspects: Iterable[str]) -> dict[str, list[Tip]]:
        """Per suspect origin, the boundaries held here for a peer to compare (step 2)."""
        convicted = self.replica.membership.convicted
        return {r: self.index.boundaries(r, convicted.get(r)) for r in sorted(set(suspects))
                if r != self.replica.id}

    def fork_answer(self, skips: dict[str, list[Tip]], limit: int | None = None
                    ) -> list[tuple[str, bytes, list[Block]]]:
        """Per origin, the newest boundary shared with the requester's ``skips``, and the
        blocks held here after it: ``(origin, hash they chain from, blocks)``."""
        out = []
        for origin in sorted(skips):
            shared = self.index.newest_shared(origin, skips[origin])
            if shared is None:
                continue
            blocks = self.blocks_after(origin, shared.last, limit)
            if blocks:
                out.append((origin, shared.hash, blocks))
        return out

    def convictions(self) -> dict[str, int]:
        """Origin -> conviction cut, for every proof held here (a pull carries it)."""
        return {r: p.cut for r, p in sorted(self.proofs.items())}

    def proofs_for(self, convictions: dict[str, int]) -> list[Proof]:
        """The proofs a peer with ``convictions`` lacks (or holds only at a higher cut)."""
        return [p for r, p in sorted(self.proofs.items())
                if p.cut < convictions.get(r, p.cut + 1)]

    # -- receiving --------------------------------------------------------------
    def admit(self, blocks: Iterable[Block], claims: Iterable[SignedClaim] = (),
              clock_limit: int | None = None, proofs: Iterable[Proof] = (),
              forks: Iterable[tuple[str, bytes, list[Block]]] = ()) -> Admission:
        """Verify then merge; DoorError (nothing changed) if a signature or proof is bad.

        Blocks and claims stamped past ``clock_limit`` are left for later (a
        node passes its wall clock plus a tolerance): taking them would drag
        this replica's clock, and so its own events, into the future.
        ``proofs`` are proofs a peer holds, ``forks`` its answer to ``skips``.
        """
        replica = self.replica
        membership = replica.membership
        keys = membership.keys
        final = None  # F, computed once a block needs it
        learned: dict[str, bytes] = {}
        working: dict[str, Tip] = {}
        stopped: set[str] = set()  # origins whose later blocks in this message are skipped
        founding = not membership.founded
        taken: list[Verified] = []
        skipped: Counter = Counter()
        found: dict[str, Proof] = {}  # proofs new here, lowest fault per origin

        def cut_of(origin: str) -> int | None:
            cuts = [c for c in (membership.cutoff.get(origin),
                                found[origin].cut if origin in found else None) if c is not None]
            return min(cuts) if cuts else None

        def lowers(proof: Proof) -> bool:
            held = found.get(proof.replica) or self.proofs.get(proof.replica)
            return held is None or proof.fault < held.fault

        def skip(block: Block, reason: str) -> None:
            skipped[reason] += 1
            stopped.add(block.replica)

        for proof in proofs:
            key = keys.get(proof.replica)
            if key is None:
                skipped[SKIP_PROOF_STRANGER] += 1
                continue
            if not proofs_.check(proof, key, self._verify):
                raise DoorError(f"a proof against {proof.replica} does not check out")
            if lowers(proof):
                found[proof.replica] = proof
        for origin, prev, theirs in forks:
            proof = self._compare(origin, prev, theirs)
            if proof is not None and lowers(proof):
                found[origin] = proof

        for block in blocks:
            origin = block.replica
            if origin in stopped:
                skipped[SKIP_GAP] += 1
                continue
            tip = working.get(origin) or self.tip(origin)
            if block.first <= tip.last:
                proof = self._fork_with_held(block)
                if proof is not None and lowers(proof):
                    found[origin] = proof
                if block.last > tip.last:
                    skip(block, SKIP_OVERLAP)
                continue  # else held already: a duplicate, nothing to say
            if block.first != tip.last + 1:
                skip(block, SKIP_GAP)
                continue
            cut = cut_of(origin)
            if cut is not None and block.first > cut:
                skip(block, SKIP_RETIRED)
                continue
            key = keys.get(origin) or learned.get(origin)
            if key is None and founding and block.first == 1:
                key = _founding_key(block)
                founding = key is None
            if key is None:
                skip(block, SKIP_STRANGER)
                continue
            hash_ = link(tip.hash, block.body)
            if not self._verify(key, head_message(origin, block.last, hash_), block.sig):
                raise DoorError(f"block {origin}:{block.first}-{block.last} does not carry "
                                f"its replica's signature")
            if origin == replica.id:
                raise OwnFeedConflict(
                    f"peers hold events {origin}:{block.first}-{block.last} signed with this "
                    "replica's key that this node does not have (its store lost events it "
                    "had sent, or another node runs with the same key)")
            claim = self.claims.get(origin)
            if proofs_.broken_seq(claim, block) is not None:
                proof = proofs_.broken_promise(claim, tip.hash, block)
                if lowers(proof):
                    found[origin] = proof
                cut = cut_of(origin)
                if block.first > cut:
                    skip(block, SKIP_RETIRED)
                    continue
            if final is None:
                final = replica.frontier()
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

        if replica.id in found:
            raise OwnFeedConflict("a peer holds proof that this replica's key signed two "
                                  "versions of its feed (another node runs with the same key, "
                                  "or the store lost events it had sent)")
        if clock_limit is not None:
            claims = [c for c in claims if c.clock <= clock_limit]
        counted = self._verified_claims(claims, learned)
        self._convict(found)
        added = 0
        if taken:
            for verified in taken:
                block = verified.block
                self.index.add(self.tip(block.replica).hash, verified.hash, block)
                self.tips[block.replica] = Tip(block.last, verified.hash)
            delta = AWORSet.from_entries(
                (e.replica, e.seq, e) for v in taken for e in v.block.events)
            added = replica.merge(delta)
        if counted:
            for claim in counted:
                self.claims[claim.replica] = claim
            replica.observe_claims(Claim(c.replica, c.seq, c.clock) for c in counted)
            late = {}
            for claim in counted:  # a claim that blocks held here already broke
                entry = self.index.block_holding(claim.replica, claim.seq + 1)
                if entry is not None and proofs_.broken_seq(claim, entry.block) is not None:
                    proof = proofs_.broken_promise(claim, entry.prev, entry.block)
                    held = self.proofs.get(claim.replica)
                    if held is None or proof.fault < held.fault:
                        late[claim.replica] = found[claim.replica] = proof
            self._convict(late)
        self.refused.update(skipped)
        return Admission(added, taken, skipped, tuple(found[r] for r in sorted(found)))

    def _convict(self, found: dict[str, Proof]) -> None:
        for origin in sorted(found):
            proof = found[origin]
            held = self.proofs.get(origin)
            if held is None or proof.fault < held.fault:
                self.proofs[origin] = proof
                self.replica.convict(origin, proof.cut)
        if self.replica.needs_replay:
            self.replay_feed()

    def replay_feed(self) -> None:
        """Rebuild the replica in place from every block held (after a conviction that
        reached into history compaction had dropped). Keeps its id, clock, claims,
        convictions, acks and safety counters; F is recomputed from scratch."""
        replica = self.replica
        old = replica.membership
        claims, convicted = list(old.claimed.values()), dict(old.convicted)
        acks, clock, fresh = replica._acks, replica.clock.last, replica._fresh
        counters = (replica.frontier_regressions, replica.frontier_violations,
                    replica.forged_conflicts, replica.conviction_retractions)
        replica.__init__(replica.id)
        (replica.frontier_regressions, replica.frontier_violations, replica.forged_conflicts,
         replica.conviction_retractions) = counters
        replica._acks = acks
        replica.clock.observe(clock)
        for origin, cut in sorted(convicted.items()):
            replica.membership.convict(origin, cut)
        replica.restore([e for origin in self.index.origins()
                         for entry in self.index.entries(origin) for e in entry.block.events])
        replica.observe_claims(claims)
        replica._fresh = fresh  # the events are not new: the node's store holds them

    def _fork_with_held(self, block: Block) -> Proof | None:
        """A fork proof if ``block`` starts where a held block starts, differs, and carries
        its origin's signature after the same hash; else None (a duplicate, another cut,
        or a forgery: none of them changes anything)."""
        entry = self.index.block_starting(block.replica, block.first)
        if entry is None or entry.block.body == block.body:
            return None
        key = self.replica.membership.keys.get(block.replica)
        if key is None or not proofs_.signed(key, entry.prev, block, self._verify):
            return None
        return proofs_.fork(entry.prev, entry.block, block)

    def _compare(self, origin: str, prev: bytes, theirs: list[Block]) -> Proof | None:
        """Step 3: a peer's blocks after the boundary ``prev`` against the ones held here."""
        key = self.replica.membership.keys.get(origin)
        if key is None:
            return None
        for block in theirs:
            if block.replica != origin:
                raise DoorError("a fork answer mixes origins")
            if not proofs_.signed(key, prev, block, self._verify):
                raise DoorError(f"block {origin}:{block.first}-{block.last} of a fork answer "
                                "does not carry its replica's signature")
            entry = self.index.block_starting(origin, block.first)
            if entry is None or entry.prev != prev:
                return None  # past what is held here: ordinary pulls bring it
            if entry.block.body != block.body:
                return proofs_.fork(prev, entry.block, block)
            prev = entry.hash
        return None

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
            if self._verify(key, claim_message(claim.replica, claim.seq, claim.clock), claim.sig):
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


__all__ = ["Admission", "Answer", "Door", "DoorError", "OwnFeedConflict", "Verified"]
