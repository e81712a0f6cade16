"""CausalContext: which dots a replica has seen.

Theory of operation
-------------------
A causal context is a version vector plus a *dot cloud*:

* ``vv[r] = n`` means every dot ``(r, 1..n)`` has been seen;
* ``cloud[r]`` holds the seqs of ``r`` seen beyond a gap (``> vv[r] + 1``).

``has`` asks both. ``add`` and ``merge`` *compact*: a cloud seq moves into the
version vector only when it is the next contiguous one. A blind ``max`` would
claim dots that were never seen, and every data-loss bug in the reference
trackers is exactly that (crdt-notes.md), so there is no way to set
``vv`` here except by contiguous growth or by merging another context's
``vv`` (whose owner did see all of it).

Rules this module keeps
-----------------------
* Invariant after every public call: no cloud seq is ``<= vv[r] + 1``, no
  empty cloud set, no ``vv`` entry of 0.
* Iteration order is always sorted (replica ids, then seqs), never dict or set
  order, so that encodings and digests are the same in every process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .dot import Dot


class CausalContext:
    __slots__ = ("vv", "cloud")

    def __init__(self) -> None:
        self.vv: dict[str, int] = {}
        self.cloud: dict[str, set[int]] = {}

    @classmethod
    def from_dots(cls, dots: Iterable[tuple[str, int]]) -> CausalContext:
        cc = cls()
        for replica, seq in dots:
            cc.add(replica, seq)
        return cc

    @classmethod
    def from_parts(cls, vv: dict[str, int], cloud: dict[str, Iterable[int]]) -> CausalContext:
        cc = cls()
        for replica in sorted(vv):
            if vv[replica] > 0:
                cc.vv[replica] = vv[replica]
        for replica in sorted(cloud):
            for seq in sorted(cloud[replica]):
                cc.add(replica, seq)
        return cc

    def copy(self) -> CausalContext:
        cc = CausalContext()
        cc.vv = dict(self.vv)
        cc.cloud = {r: set(s) for r, s in self.cloud.items()}
        return cc

    # -- queries ---------------------------------------------------------
    def has(self, replica: str, seq: int) -> bool:
        if seq <= self.vv.get(replica, 0):
            return True
        cloud = self.cloud.get(replica)
        return cloud is not None and seq in cloud

    def __contains__(self, dot: tuple[str, int]) -> bool:
        return self.has(dot[0], dot[1])

    def contiguous(self, replica: str) -> int:
        """Highest seq n of ``replica`` such that all of 1..n have been seen."""
        return self.vv.get(replica, 0)

    def replicas(self) -> list[str]:
        return sorted(self.vv.keys() | self.cloud.keys())

    def dots(self) -> Iterator[Dot]:
        """Every dot covered, sorted. Only sensible for small (delta) contexts."""
        for replica in self.replicas():
            for seq in range(1, self.vv.get(replica, 0) + 1):
                yield Dot(replica, seq)
            for seq in sorted(self.cloud.get(replica, ())):
                yield Dot(replica, seq)

    def size(self) -> int:
        """Number of dots covered."""
        return sum(self.vv.values()) + sum(len(s) for s in self.cloud.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalContext):
            return NotImplemented
        return self.vv == other.vv and self.cloud == other.cloud

    def __repr__(self) -> str:
        parts = []
        for replica in self.replicas():
            cloud = sorted(self.cloud.get(replica, ()))
            parts.append(f"{replica}:{self.vv.get(replica, 0)}" + (f"+{cloud}" if cloud else ""))
        return f"CausalContext({', '.join(parts)})"

    # -- updates ---------------------------------------------------------
    def add(self, replica: str, seq: int) -> None:
        top = self.vv.get(replica, 0)
        if seq <= top:
            return
        if seq == top + 1:
            self.vv[replica] = seq
            if replica in self.cloud:
                self._compact(replica)
        else:
            self.cloud.setdefault(replica, set()).add(seq)

    def merge(self, other: CausalContext) -> list[str]:
        """Join ``other`` into this context; return the replicas whose vv grew."""
        grew = []
        for replica in sorted(other.vv.keys() | other.cloud.keys()):
            before = self.vv.get(replica, 0)
            theirs = other.vv.get(replica, 0)
            if theirs > before:
                self.vv[replica] = theirs
            extra = other.cloud.get(replica)
            if extra:
                self.cloud.setdefault(replica, set()).update(extra)
            if replica in self.cloud:
                self._compact(replica)
            if self.vv.get(replica, 0) > before:
                grew.append(replica)
        return grew

    def _compact(self, replica: str) -> None:
        cloud = self.cloud[replica]
        top = self.vv.get(replica, 0)
        while top + 1 in cloud:
            top += 1
            cloud.discard(top)
        if top:
            self.vv[replica] = top
        if cloud and min(cloud) <= top:
            cloud.difference_update([s for s in cloud if s <= top])
        if not cloud:
            del self.cloud[replica]
