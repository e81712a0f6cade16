"""The door: what a replica lets in from the wire, and how it signs what it sends.

Theory of operation
-------------------
Peers exchange *blocks* of signed feeds (feed.py) and *signed claims*. A
``Door`` stands in front of one ``Replica``: it keeps, per origin, the tip of
the feed held here, and admits a message in two steps.

1. **Check everything, change nothing.** Proofs and the claims of known
   members are checked first (a proof whose origin's join rides in the same
   message, against the key that join names), so that a block past a proven
   cut, or breaking a claim sent with it, is never taken and retired after
   (it could be an evict reaching back below F). Blocks are taken in message order.
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

Detection (answering pulls, comparing a peer's version) lives in detection.py,
the base class of ``Door``.

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
  never carry one; pushes of an origin's own blocks always chain. One
  exception, a race: the requester took a fork's other version between its
  pull and the answer. The answer's first block of that origin then overlaps
  the held feed and differs from the held block (in body or, past the fork,
  in signature); the door skips it and the
  rest of that origin's blocks in the message ("another version") instead of
  judging their signatures against a hash they do not follow.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import islice
from operator import itemgetter, lt
from typing import NamedTuple

from . import proofs as proofs_
from .blockindex import BlockIndex, Entry
from .clock import MAX_CLOCK
from .detection import Answer, Detection, DoorError
from .events import JOIN, MEMBER
from .feed import Block, SignedClaim, Tip, claim_message, genesis, head_message, link
from .feedwire import encode_body
from .keys import owns, verify
from .proofs import Proof
from .replica import Replica
from .snapshot import Claim

SKIP_GAP = "gap"
SKIP_STRANGER = "not a member"
SKIP_RETIRED = "past its replica's cutoff"
SKIP_BELOW_FINAL = "at or below the final frontier"
SKIP_OVERLAP = "overlaps a block held here"
SKIP_OTHER_VERSION = "another version of a block held here"
SKIP_AHEAD = "stamped too far ahead of this node's clock"
SKIP_CLOCK = "clock does not increase along its replica's feed"
SKIP_BEFORE_JOIN = "stamped at or before its replica's join"
SKIP_PROOF_STRANGER = "proof against a replica whose key is not known here"


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


class Door(Detection):
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

    # -- receiving --------------------------------------------------------------
    def admit(self, blocks: Iterable[Block], claims: Iterable[SignedClaim] = (),
              clock_limit: int | None = None, proofs: Iterable[Proof] = (),
              forks: Iterable[tuple[str, bytes, list[Block]]] = (),
              may_found: bool = True) -> Admission:
        """Verify then merge; DoorError (nothing changed) if a signature or proof is bad.

        Blocks and claims stamped past ``clock_limit`` are left for later (a
        node passes its wall clock plus a tolerance): taking them would drag
        this replica's clock, and so its own events, into the future.
        ``proofs`` are proofs a peer holds, ``forks`` its answer to ``skips``.

        ``may_found``: whether this message may bring the cluster's founding
        self-join to a replica that knows no founder yet. Anyone can sign a
        self-join with a fresh key, so a node passes True only for the answer
        of the peer it asked to admit it: a stranger's push must not make a
        joining node a member of the stranger's own cluster.
        """
        replica = self.replica
        membership = replica.membership
        keys = membership.keys
        final = None  # F, computed once a block needs it
        learned: dict[str, bytes] = {}
        joined: dict[str, int] = {}  # earliest join clock of each replica admitted in here
        working: dict[str, Tip] = {}
        last_clock: dict[str, int] = {}  # clock of the last event taken, per origin
        stopped: set[str] = set()  # origins whose later blocks in this message are skipped
        founding = may_found and not membership.founded
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

        strangers: dict[str, list[Block]] = {}  # blocks waiting for a key learned later

        def skip(block: Block, reason: str) -> None:
            skipped[reason] += 1
            stopped.add(block.replica)

        blocks = list(blocks)
        message_keys: dict[str, bytes] | None = None
        provisional: set[str] = set()  # proofs checked with a key only this message brings
        for proof in proofs:
            key = keys.get(proof.replica)
            if key is None:
                # A catching-up replica gets the proofs with the joins that make their
                # origins known: checked only after those joins, the proof would come
                # too late (the origin's blocks past its cut taken from a later
                # message). An id is derived from its key, so a join in this message
                # names the one key the proof must check against.
                if message_keys is None:
                    message_keys = _join_keys(blocks)
                key = message_keys.get(proof.replica)
                if key is None:
                    skipped[SKIP_PROOF_STRANGER] += 1
                    continue
                provisional.add(proof.replica)
            if not proofs_.check(proof, key, self._verify):
                raise DoorError(f"a proof against {proof.replica} does not check out")
            if lowers(proof):
                found[proof.replica] = proof
        for origin, prev, theirs in forks:
            proof = self._compare(origin, prev, theirs)
            if proof is not None and lowers(proof):
                found[origin] = proof

        if clock_limit is not None:
            claims = [c for c in claims if c.clock <= clock_limit]
        else:
            claims = list(claims)
        # Claims of origins known here are checked before the blocks: a block breaking
        # a claim that rides in its own message is then a broken promise found before
        # it is taken, not taken and retired after (an evict in it, applied, could
        # reach back below F before the conviction undid it).
        early = self._verified_claims([c for c in claims if c.replica in keys], {})
        promised = _Promises(early)

        pending = blocks
        while pending:
            for block in pending:
                origin = block.replica
                if origin in strangers:
                    strangers[origin].append(block)
                    continue
                if origin in stopped:
                    skipped[SKIP_GAP] += 1
                    continue
                tip = working.get(origin) or self.tip(origin)
                if block.first <= tip.last:
                    # one lookup for both questions (a store query on a node: a message
                    # can carry a hundred thousand blocks at or below the tip)
                    held = self.index.block_starting(origin, block.first)
                    proof = self._fork_with_held(block, held)
                    if proof is not None and lowers(proof):
                        found[origin] = proof
                    if block.last > tip.last:
                        skip(block, SKIP_OVERLAP)
                    elif not self._holds_block(block, held):
                        # Another version: the rest of this origin's blocks here chain on
                        # it, not on the hash held here, so their signatures cannot be
                        # checked (an honest answer carries this when the requester took
                        # a fork's other version between its pull and the answer).
                        skip(block, SKIP_OTHER_VERSION)
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
                    strangers[origin] = [block]  # its sponsor's block may come later
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
                broken = [c for c in (self.claims.get(origin), promised.broken(block))
                          if proofs_.broken_seq(c, block) is not None]
                if broken:
                    for claim in broken:
                        proof = proofs_.broken_promise(claim, tip.hash, block)
                        if lowers(proof):
                            found[origin] = proof
                    cut = cut_of(origin)
                    if block.first > cut:
                        skip(block, SKIP_RETIRED)
                        continue
                # Rules of the feed alone (or of joins every member ends up holding),
                # so every replica skips the same blocks: a member that breaks them
                # can never leave one replica holding an event another refuses.
                previous = last_clock.get(origin, replica._chain_clock.get(origin, 0))
                if not _clocks_increase(block.events, previous):
                    skip(block, SKIP_CLOCK)
                    continue
                join = min(membership.joins.get(origin, MAX_CLOCK + 1),
                           joined.get(origin, MAX_CLOCK + 1))  # none known: no bound
                if block.events[0].clock <= join <= MAX_CLOCK and not (
                        block.first == 1 and _founding_key(block) is not None):
                    skip(block, SKIP_BEFORE_JOIN)
                    continue
                if final is None:
                    final = replica.frontier()
                # Some event at or below F (and not past the cut)? The clocks rise
                # along the block (just checked) and so do its seqs, so if any is,
                # its first event is: one look instead of a pass over the events.
                events = block.events
                if events and events[0].clock <= final and (cut is None
                                                            or events[0].seq <= cut):
                    skip(block, SKIP_BELOW_FINAL)
                    continue
                if clock_limit is not None and events[-1].clock > clock_limit:
                    skip(block, SKIP_AHEAD)  # clocks increase along a valid feed: the last is top
                    continue
                if MEMBER in map(_kind, events):  # rare: a pass at C speed asks first
                    for event in events:
                        if (event.kind == MEMBER and event.action == JOIN
                                and owns(event.target, event.key)):
                            learned.setdefault(event.target, event.key)
                            joined[event.target] = min(joined.get(event.target, event.clock),
                                                       event.clock)
                working[origin] = Tip(block.last, hash_)
                last_clock[origin] = block.events[-1].clock
                taken.append(Verified(block, hash_))
            # Blocks of origins whose join came later in the message: once more,
            # in message order, now that their keys are known; the rest are strangers.
            pending = [b for r in sorted(strangers) if r in learned for b in strangers[r]]
            for origin in sorted(strangers):
                if origin not in learned:
                    skipped[SKIP_STRANGER] += 1
                    skipped[SKIP_GAP] += len(strangers[origin]) - 1
            strangers = {}

        for origin in sorted(provisional):
            if origin not in learned and origin in found and origin not in keys:
                # its join was not taken here after all (a gap, a stranger's feed):
                # a non-member's proof takes no space; it comes again with the join
                del found[origin]
                skipped[SKIP_PROOF_STRANGER] += 1
        if replica.id in found:
            raise OwnFeedConflict("a peer holds proof that this replica's key signed two "
                                  "versions of its feed (another node runs with the same key, "
                                  "or the store lost events it had sent)")
        counted = early + self._verified_claims(
            [c for c in claims if c.replica not in keys], learned)
        self._convict(found)
        added = 0
        if taken:
            for verified in taken:
                block = verified.block
                self.index.add(self.tip(block.replica).hash, verified.hash, block)
                self.tips[block.replica] = Tip(block.last, verified.hash)
            added = replica.merge_blocks([v.block for v in taken])
        if counted:
            for claim in counted:  # the latest of each origin, whatever the message order
                held = self.claims.get(claim.replica)
                if held is None or claim.clock > held.clock:
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

    def _holds_block(self, block: Block, entry: Entry | None) -> bool:
        """Is ``block`` (at or below the held tip, or taken earlier in this message) the
        same as ``entry``, the block held here at its place?"""
        if block.first > self.tip(block.replica).last:
            return True  # a repeat within the message, above what is held: as before
        # the signature too: after a fork, the same events sealed on both versions have
        # the same body but sign different chain hashes
        return entry is not None and entry.block.last == block.last \
            and entry.block.body == block.body and entry.block.sig == block.sig

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


class _Promises:
    """A message's verified claims, per origin, asked which one a block breaks.

    Every claim counts, not only each origin's latest: a block can keep a later
    claim (its seq above the block) and break an earlier one sent with it. An event
    breaks some claim iff, among the claims with a lower seq, the highest clock is
    at or above its own: claims sorted by seq with a running best clock answer that
    with one bisection per event, so many claims x many blocks stays cheap."""

    __slots__ = ("_seqs", "_best")

    def __init__(self, claims: Iterable[SignedClaim]) -> None:
        by_origin: dict[str, list[SignedClaim]] = {}
        for claim in claims:
            by_origin.setdefault(claim.replica, []).append(claim)
        self._seqs: dict[str, list[int]] = {}
        self._best: dict[str, list[SignedClaim]] = {}
        for origin, held in by_origin.items():
            held.sort(key=lambda c: (c.seq, -c.clock))
            best: list[SignedClaim] = []
            for claim in held:
                best.append(claim if not best or claim.clock > best[-1].clock else best[-1])
            self._seqs[origin] = [c.seq for c in held]
            self._best[origin] = best

    def broken(self, block: Block) -> SignedClaim | None:
        seqs = self._seqs.get(block.replica)
        if seqs is None or block.last <= seqs[0]:
            return None
        best = self._best[block.replica]
        for event in block.events:
            below = bisect_left(seqs, event.seq)  # claims with a seq under the event's
            if below and best[below - 1].clock >= event.clock:
                return best[below - 1]
        return None


def _clocks_increase(events, previous: int) -> bool:
    """Each event's clock past the one before it, the first past ``previous``
    (at C speed: a pass per pushed block)."""
    clocks = list(map(_clock, events))
    return not clocks or (previous < clocks[0]
                          and all(map(lt, clocks, islice(clocks, 1, None))))


_clock, _kind = itemgetter(0), itemgetter(3)


def _join_keys(blocks: list[Block]) -> dict[str, bytes]:
    """The keys the joins in ``blocks`` name, each checked against its target's id."""
    out: dict[str, bytes] = {}
    for block in blocks:
        for event in block.events:
            if (event.kind == MEMBER and event.action == JOIN
                    and owns(event.target, event.key)):
                out.setdefault(event.target, event.key)
    return out


def _founding_key(block: Block) -> bytes | None:
    """The key in a feed's first event when that is a founding self-join, else None."""
    first = block.events[0]
    if (first.kind == MEMBER and first.action == JOIN and first.target == block.replica
            and owns(block.replica, first.key)):
        return first.key
    return None


__all__ = ["Admission", "Answer", "Door", "DoorError", "OwnFeedConflict", "Verified"]
