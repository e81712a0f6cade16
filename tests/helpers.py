"""Shared checks: compare a replica with the reference engine and with its peers."""

from __future__ import annotations

from crdtbook.replica import Replica

from .reference import replay_all


def observable(replica: Replica):
    """Everything a user can see, in plain comparable values."""
    book = replica.book()
    return (
        replica.digest(),
        [tuple(level) for level in book.bids],
        [tuple(level) for level in book.asks],
        [tuple(f) for f in replica.fills()],
        [tuple(o) for o in replica.orders()],
    )


def assert_matches_reference(replica: Replica) -> None:
    fills, statuses, (bids, asks), reasons = replay_all(replica.events())
    assert [(tuple(f.taker), tuple(f.maker), f.price, f.qty) for f in replica.fills()] == fills
    book = replica.book()
    assert [tuple(level) for level in book.bids] == bids
    assert [tuple(level) for level in book.asks] == asks
    mine = {
        tuple(o.dot): (o.filled, o.resting, o.status)
        for o in replica.orders()
        if o.status != "pending"
    }
    assert mine == statuses
    assert {tuple(o.dot): o.reason for o in replica.orders()
            if o.status == "cancelled" and o.reason is not None} == reasons


def assert_invariants(replica: Replica) -> None:
    for order in replica.orders():
        if order.status == "pending":  # waiting on a gap: not applied yet
            assert order.filled == order.resting == order.cancelled == 0
            continue
        assert order.filled + order.resting + order.cancelled == order.qty, order
        assert 0 <= order.filled <= order.qty, order
        assert order.resting >= 0 and order.cancelled >= 0, order
        if order.type != "limit" and order.type != "post_only":
            assert order.resting == 0, order
    book = replica.book()
    if book.bids and book.asks:
        assert book.bids[0].price < book.asks[0].price, "crossed book"
    maker_total: dict = {}
    for fill in replica.fills():
        assert fill.qty > 0
        maker_total[fill.maker] = maker_total.get(fill.maker, 0) + fill.qty
        maker_total[fill.taker] = maker_total.get(fill.taker, 0) + fill.qty
    compacted = replica.fills_base > 0  # then the oldest fills are gone from the window
    for dot, total in maker_total.items():
        order = replica.order(dot)
        if order is None:
            assert compacted, f"a fill names {dot}, which this replica does not hold"
            continue
        if compacted:
            assert total <= order.filled, dot
        else:
            assert total == order.filled, dot


def stored_events(store) -> set:
    """Every event a node's store holds: its rows (events compacted out of memory)
    and the events of its signed blocks (what recovery reads the rest from)."""
    from crdtbook.feedwire import block_from_wire

    held = {e for page in store.events_after(0) for e in page}
    for origin in store.block_origins():
        for first, body, sig in store.blocks_past(origin, 0):
            held.update(block_from_wire([origin, first, body, sig], "stored block").events)
    return held
