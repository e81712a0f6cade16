"""The block index of a node, kept in its store (crdtbook/blockindex.py's interface).

Theory of operation
-------------------
A door answers pulls and looks for forks by block boundaries (see
crdtbook/detection.py). The core keeps its index in memory, which for a
node would be the whole history again; here the index is the store's
``blocks`` table (keyed by origin and last seq, with the hash each block
chains from and its own), read on a connection of its own on the event
loop's thread: every lookup is one indexed query.

Blocks the door took but the journal has not committed yet live in an
overlay: ``add`` puts them there and in the *unwritten* list, the journal
writes the unwritten ones with the next commit (``take_unwritten``) and
drops them from the overlay once durable (``committed``). A lookup reads
the overlay first, so the door sees every block it took, at once.

Blocks read back from the store carry their bytes and signature but no
decoded events (relaying needs none); lookups that answer a question about
one block (``block_ending``, ``block_starting``, ``block_holding``) decode
it, since proofs look inside.

Rules this module keeps
-----------------------
* Same answers as the in-memory ``BlockIndex`` for the same blocks.
* Reads only on the thread that opened the store (the event loop's).
* At most ``MAX_BYTES`` of block bytes per ``blocks_after`` answer (at least
  one block): a page a peer can take in one message.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from crdtbook.blockindex import BlockIndex, Entry, skip_list
from crdtbook.feed import Block, Tip, genesis
from crdtbook.feedwire import block_from_wire

MAX_BYTES = 8 * 1024 * 1024


class Unwritten(NamedTuple):
    prev: bytes
    hash: bytes
    block: Block


class StoreIndex:
    def __init__(self, store) -> None:
        self._store = store
        self._db: sqlite3.Connection = store.index_connection()
        self._overlay: dict[str, list[Entry]] = {}
        self._unwritten: list[Unwritten] = []
        self._origins: set[str] = {
            name for (name,) in self._db.execute(
                "SELECT DISTINCT n.name FROM blocks b JOIN names n ON n.id = b.rid")}

    # -- writing (with the journal) ------------------------------------------------
    def add(self, prev: bytes, hash_: bytes, block: Block) -> None:
        self._overlay.setdefault(block.replica, []).append(Entry(prev, hash_, block))
        self._unwritten.append(Unwritten(prev, hash_, block))
        self._origins.add(block.replica)

    def take_unwritten(self) -> list[Unwritten]:
        taken, self._unwritten = self._unwritten, []
        return taken

    def committed(self, written: list[Unwritten]) -> None:
        """Blocks now durable in the store: the overlay no longer needs them."""
        done = {(w.block.replica, w.block.last) for w in written}
        for origin in {w.block.replica for w in written}:
            kept = [e for e in self._overlay.get(origin, ())
                    if (origin, e.block.last) not in done]
            if kept:
                self._overlay[origin] = kept
            else:
                self._overlay.pop(origin, None)

    # -- reading -----------------------------------------------------------------------
    def origins(self) -> list[str]:
        return sorted(self._origins)

    def _rid(self, replica: str) -> int | None:
        row = self._db.execute("SELECT id FROM names WHERE name = ?", (replica,)).fetchone()
        return row[0] if row else None

    def _rows(self, replica: str, sql: str, args: tuple) -> list[Entry]:
        rid = self._rid(replica)
        if rid is None:
            return []
        return [Entry(bytes(prev), bytes(hash_),
                      Block(replica, first, last, bytes(body), bytes(sig), ()))
                for prev, hash_, first, last, body, sig in self._db.execute(
                    "SELECT prev, hash, first, last, body, sig FROM blocks WHERE rid = ? "
                    + sql, (rid, *args))]

    def _first_at_or_after(self, replica: str, seq: int) -> Entry | None:
        """The block whose last seq is the least at or above ``seq``."""
        stored = self._rows(replica, "AND last >= ? ORDER BY last LIMIT 1", (seq,))
        best = stored[0] if stored else None
        for entry in self._overlay.get(replica, ()):
            if entry.block.last >= seq and (best is None or entry.block.last < best.block.last):
                best = entry
        return best

    def _decoded(self, entry: Entry | None) -> Entry | None:
        if entry is None or entry.block.events:
            return entry
        b = entry.block
        block = block_from_wire([b.replica, b.first, b.body, b.sig], "stored block")
        return Entry(entry.prev, entry.hash, block)

    def block_ending(self, replica: str, last: int) -> Entry | None:
        entry = self._first_at_or_after(replica, last)
        return self._decoded(entry) if entry is not None and entry.block.last == last else None

    def block_starting(self, replica: str, first: int) -> Entry | None:
        entry = self._first_at_or_after(replica, first)
        return self._decoded(entry) if entry is not None and entry.block.first == first \
            else None

    def block_holding(self, replica: str, seq: int) -> Entry | None:
        entry = self._first_at_or_after(replica, seq)
        return self._decoded(entry) if entry is not None and entry.block.first <= seq \
            else None

    def holds(self, replica: str, tip: Tip) -> bool:
        if tip.last == 0:
            return tip.hash == genesis(replica).hash
        entry = self._first_at_or_after(replica, tip.last)
        return entry is not None and entry.block.last == tip.last and entry.hash == tip.hash

    def blocks_after(self, replica: str, last: int, limit: int | None = None) -> list[Entry]:
        count = limit if limit is not None else 1 << 62
        stored = self._rows(replica, "AND last > ? ORDER BY last LIMIT ?", (last, count))
        seen = {e.block.last for e in stored}
        entries = stored + [e for e in self._overlay.get(replica, ())
                            if e.block.last > last and e.block.last not in seen]
        entries.sort(key=lambda e: e.block.last)
        if not entries or entries[0].block.first != last + 1:
            return []
        out, size = [], 0
        for entry in entries[:count]:
            if out and size + len(entry.block.body) > MAX_BYTES:
                break
            out.append(entry)
            size += len(entry.block.body)
        return out

    def boundary_at_or_below(self, replica: str, seq: int) -> Tip:
        best = None
        for entry in self._overlay.get(replica, ()):
            if entry.block.last <= seq:
                best = entry
        stored = self._rows(replica, "AND last <= ? ORDER BY last DESC LIMIT 1", (seq,))
        if stored and (best is None or stored[0].block.last > best.block.last):
            best = stored[0]
        return genesis(replica) if best is None else Tip(best.block.last, best.hash)

    def boundaries(self, replica: str, upto: int | None = None) -> list[Tip]:
        """The tip (or the newest at or below ``upto``), then 1, 2, 4 ... blocks back,
        then the genesis. Rare (a fork is suspected): reads the boundaries whole."""
        entries = self._all(replica)
        if upto is not None:
            entries = [e for e in entries if e.block.last <= upto]
        return skip_list(replica, entries)

    newest_shared = BlockIndex.newest_shared  # the same question, asked of holds()

    def entries(self, replica: str) -> list[Entry]:
        """Every block of ``replica``, decoded (a feed replay after a conviction: rare)."""
        return [self._decoded(e) for e in self._all(replica)]

    def count(self, replica: str) -> int:
        return len(self._all(replica))

    def _all(self, replica: str) -> list[Entry]:
        stored = self._rows(replica, "ORDER BY last", ())
        seen = {e.block.last for e in stored}
        return stored + [e for e in self._overlay.get(replica, ()) if e.block.last not in seen]


__all__ = ["MAX_BYTES", "StoreIndex", "Unwritten"]
