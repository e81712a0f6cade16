"""Detection: how a door answers pulls, and finds a fork between its feed and a peer's.

Theory of operation
-------------------
``Detection`` is the base class of ``Door`` (door.py): the methods that
answer pulls from the door's ``BlockIndex`` and turn a peer's evidence into
proofs (proofs.py). It owns no state of its own; it works on the door's
``replica``, ``index``, ``tips``, ``proofs`` and ``_verify``.

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

Memory: the index holds every block taken (see blockindex.py for the cost);
a node backs ``block_ending`` / ``blocks_after`` with its store.

Not handled yet: membership events (joins, evicts) of a convicted origin past
its cut. Membership events ignore cutoffs by design (merging.py), but the
door refuses blocks past a conviction cut, so a replica that took such a
join before the proof reached it applies it and one that got the proof first
never sees it. The fuzzer lets only correct slots sponsor joins. The fix:
such events take no effect (reason "equivocation"), with a replay of the
feed when a conviction reaches one already applied.

Rules this module keeps
-----------------------
* A peer is only ever sent blocks following a boundary it named (or the
  genesis): honest answers never carry a block failing its signature there.
* A fork proof needs both blocks signed after the same hash; anything else
  (a duplicate, another cut seen mid-way, a forgery) changes nothing.
* For a convicted origin, a pull names the boundary at or below its cut, so
  that versions past the cut (which no longer count) are not chased again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from . import proofs as proofs_
from .blockindex import Entry
from .feed import Block, Tip, genesis
from .proofs import Proof


class DoorError(ValueError):
    """A message that fails verification: refused whole, nothing changed."""


class Answer(NamedTuple):
    blocks: list[Block]  # what the requester lacks, in chain order per origin
    suspects: list[str]  # origins whose requester tip is not a boundary held here
    cut: bool = False  # blocks were left out to keep within ``max_bytes``


class Detection:
    # -- answering pulls (detection step 1 and 2) --------------------------------
    def block_ending(self, replica: str, last: int) -> Entry | None:
        return self.index.block_ending(replica, last)

    def blocks_after(self, replica: str, last: int, limit: int | None = None) -> list[Block]:
        return [e.block for e in self.index.blocks_after(replica, last, limit)]

    def answer(self, tips: dict[str, Tip], limit: int | None = None,
               max_bytes: int | None = None) -> Answer:
        """What a requester holding ``tips`` lacks (up to ``limit`` blocks per origin,
        and block bodies of at most ``max_bytes`` in all, at least one block: then taken
        round-robin across origins), and the origins whose tip is not a boundary held here."""
        chains: list[list[Block]] = []
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
            chain = []
            for entry in self.index.blocks_after(origin, theirs.last, limit):
                if cut is not None and entry.block.first > cut:
                    break  # nobody takes those any more
                chain.append(entry.block)
            if chain:
                chains.append(chain)
        blocks = [b for chain in chains for b in chain]
        if max_bytes is None or sum(len(b.body) for b in blocks) <= max_bytes:
            return Answer(blocks, suspects)
        # Over the budget: blocks round-robin across origins (each keeps a prefix of its
        # chain), starting one origin further each time, so every origin is served within
        # a few pages (one may need another's join first: no page is taken again and again).
        self._rotation = start = getattr(self, "_rotation", -1) + 1
        order = chains[start % len(chains):] + chains[:start % len(chains)]
        taken: list[list[Block]] = [[] for _ in order]
        size, depth = 0, 0
        while True:
            progressed = False
            for chain, out in zip(order, taken, strict=True):
                if depth < len(chain):
                    size += len(chain[depth].body)
                    if size > max_bytes and (depth or any(taken)):
                        return Answer([b for out in taken for b in out], suspects, cut=True)
                    out.append(chain[depth])
                    progressed = True
            if not progressed:
                return Answer([b for out in taken for b in out], suspects)
            depth += 1

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
        convictions, acks and safety counters; F is recomputed from scratch.

        Own events not sealed into a block yet (a node seals them at its next
        commit) are kept too: dropped, the replica would reuse their seqs for
        new events while the sealer still holds the first ones."""
        replica = self.replica
        sealed = self.tip(replica.id).last
        unsealed = [e for seq, e in sorted(replica.state.store.get(replica.id, {}).items())
                    if seq > sealed]
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
                         for entry in self.index.entries(origin) for e in entry.block.events]
                        + unsealed)
        replica.observe_claims(claims)
        replica._fresh = fresh  # the events are not new: the node's store holds them

    def _fork_with_held(self, block: Block, entry: Entry | None) -> Proof | None:
        """A fork proof if ``block`` starts where a held block starts (``entry``, the
        block held starting at its first seq), differs, and carries its origin's
        signature after the same hash; else None (a duplicate, another cut, or a
        forgery: none of them changes anything)."""
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



__all__ = ["Answer", "Detection", "DoorError"]
