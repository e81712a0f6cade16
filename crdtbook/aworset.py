"""AWORSet: a delta-state add-wins observed-remove set over dots.

Theory of operation
-------------------
The state is a *dot store* (``dot -> value``) plus a ``CausalContext`` of every
dot ever seen. A value is present while some dot holds it.

* ``add`` mints the next dot of the local replica and returns a delta whose
  store is that one entry and whose context is exactly that dot.
* ``remove_dots`` returns a delta with an empty store and the removed dots in
  its context: "I saw these and they are gone". No tombstones are kept; the
  context alone stops a removed entry from coming back.
* ``join`` (in place, ``merge``) keeps our entries that the other side also
  has or has never seen, adds theirs that we have never seen, and unions the
  contexts. It is commutative, associative and idempotent, so deltas may be
  delivered in any order, any number of times, in any batching.
* A delta is just a small state: the same class, joined the same way.

Two different values under one dot can only come from a faulty or forged
peer; the join keeps the smaller value (a semilattice: ``min``) so replicas
still converge, and reports it as ``replaced``.

Rules this module keeps
-----------------------
* A delta's context covers exactly the dots it speaks for, never more:
  a context that claims dots it does not carry would delete them elsewhere.
* Everything returned is in sorted dot order; nothing depends on dict or set
  iteration order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import Any, NamedTuple

from .context import CausalContext


class Changes(NamedTuple):
    """What a join did to the receiving state, each list in dot order."""

    added: list[tuple[str, int, Any]]
    removed: list[tuple[str, int, Any]]
    replaced: list[tuple[str, int, Any, Any]]  # (replica, seq, old, new)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.replaced)


class AWORSet:
    __slots__ = ("store", "context")

    def __init__(self) -> None:
        self.store: dict[str, dict[int, Any]] = {}
        self.context = CausalContext()

    # -- construction ----------------------------------------------------
    @classmethod
    def from_entries(
        cls, entries: Iterable[tuple[str, int, Any]], context: CausalContext | None = None
    ) -> AWORSet:
        """A state holding ``entries``; its context is ``context`` or just their dots."""
        state = cls()
        for replica, seq, value in entries:
            state.store.setdefault(replica, {})[seq] = value
            if context is None:
                state.context.add(replica, seq)
        if context is not None:
            state.context = context
        return state

    def copy(self) -> AWORSet:
        state = AWORSet()
        state.store = {r: dict(s) for r, s in self.store.items()}
        state.context = self.context.copy()
        return state

    # -- queries ---------------------------------------------------------
    def get(self, replica: str, seq: int) -> Any:
        entries = self.store.get(replica)
        return None if entries is None else entries.get(seq)

    def entries(self) -> Iterator[tuple[str, int, Any]]:
        for replica in sorted(self.store):
            entries = self.store[replica]
            for seq in sorted(entries):
                yield replica, seq, entries[seq]

    def values(self) -> list[Any]:
        return sorted({value for _, _, value in self.entries()})

    def __len__(self) -> int:
        return sum(len(s) for s in self.store.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AWORSet):
            return NotImplemented
        mine = {r: s for r, s in self.store.items() if s}
        theirs = {r: s for r, s in other.store.items() if s}
        return mine == theirs and self.context == other.context

    def __repr__(self) -> str:
        return f"AWORSet({list(self.entries())!r}, {self.context!r})"

    # -- deltas ----------------------------------------------------------
    def add(self, replica: str, value: Any) -> AWORSet:
        """Add ``value`` under the next dot of ``replica``; return the delta."""
        seq = self.context.contiguous(replica) + 1
        delta = AWORSet.from_entries([(replica, seq, value)])
        self.merge(delta)
        return delta

    def remove_dots(self, dots: Iterable[tuple[str, int]]) -> AWORSet:
        """Remove the entries at ``dots``; return the delta."""
        delta = AWORSet()
        for replica, seq in dots:
            if self.context.has(replica, seq):
                delta.context.add(replica, seq)
        self.merge(delta)
        return delta

    def remove(self, value: Any) -> AWORSet:
        """Remove every entry holding ``value`` (observed-remove)."""
        return self.remove_dots([(r, s) for r, s, v in self.entries() if v == value])

    def missing(self, context: CausalContext, limit: int | None = None) -> AWORSet:
        """Our state restricted to the dots ``context`` has not seen.

        With ``limit``, at most that many entries (lowest seqs of each replica
        first, replicas in sorted order): a page. The delta's context covers
        exactly the dots it carries, so a page is as valid as the whole.
        """
        delta = AWORSet()
        room = limit
        for replica in self.context.replicas():
            if room is not None and room <= 0:
                break
            theirs_top = context.contiguous(replica)
            ours = self.store.get(replica, {})
            seqs = list(range(theirs_top + 1, self.context.contiguous(replica) + 1))
            seqs.extend(sorted(s for s in self.context.cloud.get(replica, ()) if s > theirs_top))
            for seq in seqs:
                if context.has(replica, seq):
                    continue
                if room is not None:
                    if room <= 0:
                        break
                    room -= 1
                delta.context.add(replica, seq)
                value = ours.get(seq)
                if value is not None:
                    delta.store.setdefault(replica, {})[seq] = value
        return delta

    # -- join ------------------------------------------------------------
    def merge(self, other: AWORSet, additive: bool = False) -> Changes:
        """Join ``other`` into this state in place and report what changed.

        ``additive``: the caller knows ``other`` carries every dot its context
        covers (a delta of adds only), so nothing here can be removed and the
        pass looking for removals is skipped (it costs a walk over our dots).
        """
        added: list[tuple[str, int, Any]] = []
        removed: list[tuple[str, int, Any]] = []
        replaced: list[tuple[str, int, Any, Any]] = []
        cc = self.context
        store = self.store
        for replica in sorted(other.store):
            theirs = other.store[replica]
            mine = store.get(replica)
            top = cc.vv.get(replica, 0)
            cloud = cc.cloud.get(replica, ())
            if mine is None and not top and not cloud:  # a replica new to us: all added
                store[replica] = dict(theirs)
                seqs = sorted(theirs)  # the triples made at C speed: a replay's whole history
                added.extend(zip(repeat(replica), seqs, map(theirs.__getitem__, seqs)))
                continue
            for seq in sorted(theirs):
                value = theirs[seq]
                if seq > top and seq not in cloud:  # never seen: add it
                    if mine is None:
                        mine = store[replica] = {}
                    mine[seq] = value
                    added.append((replica, seq, value))
                elif mine is not None and seq in mine:
                    old = mine[seq]
                    if value != old and value < old:
                        mine[seq] = value
                        replaced.append((replica, seq, old, value))
                # else: seen and removed here; it stays removed.
        for replica in () if additive else other.context.replicas():
            mine = store.get(replica)
            if not mine:
                continue
            theirs = other.store.get(replica, {})
            for seq in _covered(other.context, replica, mine):
                if seq not in theirs:
                    removed.append((replica, seq, mine.pop(seq)))
            if not mine:
                del store[replica]
        cc.merge(other.context)
        return Changes(added, removed, replaced)

    def adopt(self, other: AWORSet) -> list[Any]:
        """``merge`` into a state that holds nothing and has seen nothing (a replay
        into a new replica); return the values added, in dot order.

        What ``merge`` would do, without its ``(replica, seq, value)`` triple per
        entry: a replay's caller wants the values, and the triples of a whole
        history cost more than copying it.
        """
        assert not self.store and not self.context.vv and not self.context.cloud
        values: list[Any] = []
        for replica in sorted(other.store):
            theirs = other.store[replica]
            self.store[replica] = dict(theirs)
            values.extend(map(theirs.__getitem__, sorted(theirs)))
        self.context.merge(other.context)
        return values

    def join(self, other: AWORSet) -> AWORSet:
        """Pure join: a new state, neither input changed."""
        result = self.copy()
        result.merge(other)
        return result


class InOrderDelta(AWORSet):
    """A delta as decoded, with what its decode proved of it: a replay's proof.

    ``proof`` is ``(events, runs)``, made by the decoder alone (codec.py) and
    never changed after: ``events``, a tuple of every event it decoded (orders
    and cancels only), each
    past the one before it by clock, or at the same clock by replica (so in
    position order, and no origin's clock repeats); ``runs``, its own copy
    of the store as decoded, each origin's seqs 1..n filed in the order of
    ``events``. So along each origin's seqs its clocks strictly increase,
    and ``events`` is what a replay hands the engine, with no sort.

    ``store`` and ``context`` stay a plain delta's, which anyone may change
    (``merge`` does): whoever uses the proof (``Merging._merge_into_empty``)
    first checks that the store still equals ``runs``, dict for dict.
    """

    __slots__ = ("proof",)


def _covered(context: CausalContext, replica: str, mine: dict[int, Any]) -> list[int]:
    """Seqs held in ``mine`` that ``context`` has seen, sorted; cost O(min(sizes))."""
    top = context.contiguous(replica)
    cloud = context.cloud.get(replica, ())
    if len(mine) <= top + len(cloud):
        return sorted(s for s in mine if s <= top or s in cloud)
    seqs = [s for s in range(1, top + 1) if s in mine]
    seqs.extend(sorted(s for s in cloud if s in mine))
    return seqs
