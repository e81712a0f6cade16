"""Recover: open a data directory and stand the replica up where it stopped.

Theory of operation
-------------------
A store holds the replica's last snapshot (written with the history that
compaction took out of memory) and every event. Every event that was in
memory when the snapshot was taken is in it; every event stored later sorts
after the snapshot's final frontier F (nothing at or below F can arrive any
more: that is what F means). So recovery is:

1. install the snapshot (if there is one);
2. replay, in position order, every stored event above its F (events the
   snapshot already holds are duplicates and change nothing), and, should
   the store hold more events than the replica now counts, every stored
   event the snapshot's context does not cover (one that arrived below F);
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
from crdtbook.replica import Replica

from .sqlite import Batch, Store, StoreError


def identity(store: Store, wanted: str) -> str:
    """The replica id kept in the store; for a new store, ``wanted`` (the id of
    the directory's key, made durable before anything else)."""
    replica_id = store.meta.get("replica")
    if replica_id is None:
        if store.event_count() or store.snapshot() is not None:
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
    replayed = 0
    for page in store.events_after(final):
        replayed += replica.restore(page)  # what the snapshot did not hold already
    if store.event_count() > replica.events_total():
        # Some stored event sorts at or below the snapshot's F without being in
        # it (one that arrived below F: an evict racing its target's last
        # events). Rare: find them with one pass over everything stored.
        for page in store.events_after(0):
            replayed += replica.restore(
                [e for e in page if not replica.state.context.has(e.replica, e.seq)])
    lease = store.meta.get("clock_lease")
    if isinstance(lease, int):
        replica.clock.observe(lease)
    return replica, replayed
