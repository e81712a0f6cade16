"""Recover: open a data directory and stand the replica up where it stopped.

Theory of operation
-------------------
A store holds the replica's last snapshot (written with the history that
compaction took out of memory), a row for every event compaction took out
of memory, and every signed block the node took or sealed (each written
before anything that depends on it was promised). Every event that was in
memory when the snapshot was taken is in it; every event that came later is
in a stored block, and, if it was compacted since, in a row too (schema 2
stores also hold a row for every event). So recovery is:

1. install the snapshot (if there is one);
2. replay, in position order, every stored event the snapshot's context
   does not cover: the rows above its final frontier F, and the events of
   every origin's blocks past the seq its context holds contiguously (the
   same event from a row and a block counts once; each block's bytes are
   checked against its feed's hash chain, so a block damaged on disk is
   refused, not read as other events). Should the store hold
   more rows than the replica now counts, every row the context does not
   cover is replayed too (one that arrived below F, schema 2 only);
3. move the hybrid clock past the clock lease, the highest clock this
   replica may have promised in a claim before it stopped.

The replica's own events come back through ``Replica.restore``, the one path
allowed to re-admit events under the replica's own id: a peer sending them
would be forging, but the store is where they were made durable.
"""

from __future__ import annotations

import cbor2

from crdtbook.codec import decode_snapshot
from crdtbook.dot import check_replica
from crdtbook.feed import link
from crdtbook.feedwire import block_from_wire
from crdtbook.replica import Replica

from .sqlite import Batch, Store, StoreError

RESTORE_PAGE = 50_000  # events handed to the replica at once


def identity(store: Store, wanted: str) -> str:
    """The replica id kept in the store; for a new store, ``wanted`` (the id of
    the directory's key, made durable before anything else)."""
    replica_id = store.meta.get("replica")
    if replica_id is None:
        if store.holds_events() or store.snapshot() is not None:
            raise StoreError(f"the store in {store.directory} holds events but names no "
                             "replica id; it was left as it is: restore a backup or move it "
                             "aside")
        replica_id = wanted
        store.write(Batch(meta={"replica": replica_id}))
    try:
        return check_replica(replica_id)
    except ValueError:
        raise StoreError(f"the store in {store.directory} names no valid replica id "
                         f"({str(replica_id)[:80]!r}); it was left as it is") from None


def recover(store: Store, replica_id: str) -> tuple[Replica, int]:
    """The replica as the store left it, and how many events were replayed.

    StoreError if what the store holds cannot be read back (a damaged row).
    """
    try:
        return _recover(store, replica_id)
    except (ValueError, LookupError, TypeError, cbor2.CBORError) as exc:  # a damaged row
        raise StoreError(f"the store in {store.directory} holds data that cannot be read back "
                         f"({str(exc)[:200]}); it was left as it is: restore a backup or move "
                         "it aside") from None


def _recover(store: Store, replica_id: str) -> tuple[Replica, int]:
    replica = Replica(replica_id, track_fresh=True)
    final = 0
    saved = store.snapshot()
    if saved is not None:
        final, fills_base, body = saved
        try:
            snapshot, claims = decode_snapshot(body)
        except ValueError as exc:
            raise StoreError(f"the snapshot in {store.directory} cannot be read ({exc}); "
                             "the store was left as it is") from None
        replica.install(snapshot)
        replica.observe_claims(claims)
    context = replica.state.context
    missing: dict[tuple[str, int], object] = {}
    for page in store.events_after(final):
        for event in page:
            if not context.has(event.replica, event.seq):
                missing.setdefault((event.replica, event.seq), event)
    for origin in store.block_origins():
        chained = None
        for first, last, body, sig, prev, hash_ in store.linked_blocks_past(
                origin, context.contiguous(origin)):
            if link(prev, body) != hash_ or (chained is not None and prev != chained):
                raise StoreError(f"the store in {store.directory} holds a block of {origin} "
                                 f"(seqs {first}-{last}) whose bytes do not match its feed's "
                                 "hash chain (damaged on disk); it was left as it is: restore "
                                 "a backup or move it aside")
            chained = hash_
            block = block_from_wire([origin, first, body, sig], "stored block")
            for event in block.events:
                if not context.has(event.replica, event.seq):
                    missing.setdefault((event.replica, event.seq), event)
    events = sorted(missing.values())
    replayed = 0
    for start in range(0, len(events), RESTORE_PAGE):
        replayed += replica.restore(events[start:start + RESTORE_PAGE])
    if store.event_count() > replica.events_total():
        # Some stored row sorts at or below the snapshot's F without being in
        # it (one that arrived below F: an evict racing its target's last
        # events). Rare: find them with one pass over everything stored.
        for page in store.events_after(0):
            replayed += replica.restore(
                [e for e in page if not replica.state.context.has(e.replica, e.seq)])
    lease = store.meta.get("clock_lease")
    if isinstance(lease, int):
        replica.clock.observe(lease)
    return replica, replayed
