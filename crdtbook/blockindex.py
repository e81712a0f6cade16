"""The block index: every block a door took, per origin, by the seqs it ends and starts at.

Theory of operation
-------------------
A door (door.py) must answer pulls with the blocks a peer lacks, forwarded
exactly as sealed, and compare its own version of a feed with a peer's to
find a fork (proofs.py). Both need its blocks by position: per origin, the
blocks taken, in chain order, each with the hash it chains from and its own.
Blocks of one origin never overlap and are taken in seq order, so a list of
entries sorted by last seq (and the parallel list of last seqs, for bisect)
is the whole index.

    block_ending(r, last)        the block whose last seq is ``last``
    block_starting(r, first)     the block whose first seq is ``first``
    blocks_after(r, last, n)     up to n blocks after a boundary held here
    boundaries(r)                a skip list of boundaries (tip, then 2, 4, 8 ... back)
    newest_shared(r, tips)       the newest of a peer's boundaries held here too

Memory: one ``Entry`` per block, i.e. two 32-byte hashes, the body bytes and
the decoded events (about 1 KB per block of one small order, mostly the
decoded tuple), for every block since the feed began: the index is the
feed. A node backs it with its store (blocks by (origin, last seq), keeping
body, signature and previous hash) and keeps in memory only the recent ones.

Rules this module keeps
-----------------------
* Entries of one origin are appended in chain order only (``add`` checks it).
* Lookups are by exact boundary: a peer's tip that is not a boundary here
  names another version of the feed (or another cut of it, which is one).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import NamedTuple

from .feed import Block, Tip, genesis


class Entry(NamedTuple):
    prev: bytes  # the hash this block chains from
    hash: bytes  # the hash after it
    block: Block


class BlockIndex:
    def __init__(self) -> None:
        self._entries: dict[str, list[Entry]] = {}
        self._lasts: dict[str, list[int]] = {}

    def add(self, prev: bytes, hash_: bytes, block: Block) -> None:
        entries = self._entries.setdefault(block.replica, [])
        lasts = self._lasts.setdefault(block.replica, [])
        expected = entries[-1].block.last + 1 if entries else 1
        if block.first != expected or (entries and entries[-1].hash != prev):
            raise ValueError(f"block {block.replica}:{block.first}-{block.last} does not "
                             "follow the last block indexed")
        entries.append(Entry(prev, hash_, block))
        lasts.append(block.last)

    def origins(self) -> list[str]:
        return sorted(self._entries)

    def entries(self, replica: str) -> list[Entry]:
        return list(self._entries.get(replica, ()))

    def count(self, replica: str) -> int:
        return len(self._entries.get(replica, ()))

    def block_ending(self, replica: str, last: int) -> Entry | None:
        lasts = self._lasts.get(replica)
        if not lasts:
            return None
        i = bisect_left(lasts, last)
        return self._entries[replica][i] if i < len(lasts) and lasts[i] == last else None

    def block_starting(self, replica: str, first: int) -> Entry | None:
        lasts = self._lasts.get(replica)
        if not lasts:
            return None
        i = bisect_left(lasts, first)
        if i < len(lasts):
            entry = self._entries[replica][i]
            if entry.block.first == first:
                return entry
        return None

    def block_holding(self, replica: str, seq: int) -> Entry | None:
        lasts = self._lasts.get(replica)
        if not lasts:
            return None
        i = bisect_left(lasts, seq)
        if i < len(lasts):
            entry = self._entries[replica][i]
            if entry.block.first <= seq:
                return entry
        return None

    def holds(self, replica: str, tip: Tip) -> bool:
        """Is ``tip`` a boundary of the version of ``replica``'s feed held here?"""
        if tip.last == 0:
            return tip.hash == genesis(replica).hash
        entry = self.block_ending(replica, tip.last)
        return entry is not None and entry.hash == tip.hash

    def blocks_after(self, replica: str, last: int, limit: int | None = None) -> list[Entry]:
        """Up to ``limit`` blocks following the boundary at ``last`` (none if it is not one)."""
        lasts = self._lasts.get(replica)
        if not lasts:
            return []
        i = bisect_right(lasts, last)
        entries = self._entries[replica]
        if i >= len(entries) or entries[i].block.first != last + 1:
            return []
        stop = len(entries) if limit is None else min(len(entries), i + limit)
        return entries[i:stop]

    def boundary_at_or_below(self, replica: str, seq: int) -> Tip:
        """The newest boundary at or below ``seq`` (the genesis if none)."""
        lasts = self._lasts.get(replica)
        i = bisect_right(lasts, seq) if lasts else 0
        if not i:
            return genesis(replica)
        entry = self._entries[replica][i - 1]
        return Tip(entry.block.last, entry.hash)

    def boundaries(self, replica: str, upto: int | None = None) -> list[Tip]:
        """The boundaries a peer compares with: the tip (or the newest at or below
        ``upto``), then 1, 2, 4, 8 ... blocks back, then the genesis (about
        log2(blocks) + 2 of them)."""
        entries = self._entries.get(replica, [])
        if upto is not None:
            entries = entries[:bisect_right(self._lasts.get(replica, []), upto)]
        return skip_list(replica, entries)

    def newest_shared(self, replica: str, tips: list[Tip]) -> Tip | None:
        """The newest of a peer's boundaries that is one here too."""
        for tip in sorted(tips, reverse=True):
            if self.holds(replica, tip):
                return tip
        return None


def skip_list(replica: str, entries: list[Entry]) -> list[Tip]:
    """The boundaries of ``entries`` (one feed, in order) a peer compares with: the
    last, then 1, 2, 4, 8 ... blocks back, then the genesis."""
    out = []
    back = 1
    while back <= len(entries):
        entry = entries[-back]
        out.append(Tip(entry.block.last, entry.hash))
        back *= 2
    out.append(genesis(replica))
    return out


__all__ = ["BlockIndex", "Entry", "skip_list"]
