"""The embedded store: round trips, paging in position order, and refusals at open."""

from __future__ import annotations

import os
import sqlite3

import pytest

from crdtbook.events import make_cancel, make_member, make_order
from node.store.sqlite import AccountRow, Batch, FinalOrder, Store, StoredFill, StoreError


def order(clock, replica, seq, account="alice"):
    return make_order(clock, replica, seq, "buy", "limit", 100, 5, account)


@pytest.fixture
def store(tmp_path):
    s = Store.open(str(tmp_path / "d"), "book1")
    yield s
    s.close()


def test_events_round_trip_in_position_order(store):
    events = [order(30, "b", 1), order(10, "a", 1), make_cancel(40, "a", 2, "a", 1),
              make_member(5, "a", 3, "join", "b", 0), order(30, "a", 4)]
    store.write(Batch(events=events))
    store.write(Batch(events=events[:2]))  # duplicates are ignored
    assert store.event_count() == 5
    everything = store.events_page(None, 100)
    assert everything == sorted(events)
    # pages of 1 walk the same order, ties on the clock broken by replica name
    walked, after = [], None
    while page := store.events_page(after, 1):
        walked += page
        after = page[-1].position
    assert walked == sorted(events)
    assert store.events_of("a", 1, 2) == {1: events[1], 2: events[2]}


def test_staged_rows_count_once_committed(store):
    events = [order(10, "a", 1), order(20, "b", 1)]
    store.stage(Batch(events=events, meta={"k": 1}))
    assert store.event_count() == 0  # the reader sees nothing of an open transaction
    assert "k" not in store.meta
    store.commit()
    assert store.event_count() == 2 and store.meta["k"] == 1
    assert store.events_page(None, 10) == events


def test_a_failed_stage_leaves_nothing_and_the_store_usable(store):
    unbindable = AccountRow("carol", b"\x00" * 32, object())  # not an SQLite value
    with pytest.raises(StoreError, match="writing to the store failed"):
        store.stage(Batch(events=[order(10, "fresh", 1)], accounts=[unbindable],
                          meta={"k": 1}))
    assert store.event_count() == 0 and "k" not in store.meta
    # the name interned by the failed transaction is forgotten with it: interned
    # again, the event reads back under its own name
    store.write(Batch(events=[order(10, "fresh", 1)]))
    assert store.events_page(None, 10) == [order(10, "fresh", 1)]


def test_final_orders_and_fills(store):
    a1, b1 = order(10, "a", 1, "alice"), order(20, "b", 1, "bob")
    store.write(Batch(events=[a1, b1]))
    assert store.order("a", 1) == (a1, None)
    store.write(Batch(orders=[FinalOrder("a", 1, "filled", 5, None)],
                      fills=[StoredFill(0, 20, ("b", 1), ("a", 1), 100, 5, "sell", "bob",
                                        "alice")]))
    assert store.order("a", 1) == (a1, FinalOrder("a", 1, "filled", 5, None))
    assert store.final_orders_page(None, 10, account="alice") == [
        (a1, FinalOrder("a", 1, "filled", 5, None))]
    assert store.final_orders_page(None, 10, account="bob") == []
    assert store.final_orders_page(None, 10, status="cancelled") == []
    assert [f.index for f in store.fills_page(-1, 10, account="alice")] == [0]
    assert [f.index for f in store.fills_page(-1, 10, account="bob")] == [0]
    assert store.fills_page(-1, 10, account="carol") == []
    assert store.fill_count() == 1


def test_reopen_keeps_everything(tmp_path):
    path = str(tmp_path / "d")
    s = Store.open(path, "book1")
    s.write(Batch(events=[order(10, "a", 1)], meta={"replica": "a"}))
    s.close()
    s = Store.open(path, "book1")
    assert s.meta["replica"] == "a"
    assert s.events_page(None, 10) == [order(10, "a", 1)]
    s.close()


def test_second_open_is_refused_while_locked(store):
    with pytest.raises(StoreError, match="in use by another node"):
        Store.open(store.directory, "book1")


def test_wrong_book_is_refused_and_left_alone(tmp_path):
    path = str(tmp_path / "d")
    Store.open(path, "book1").close()
    before = _files(path)
    with pytest.raises(StoreError, match="holds book 'book1', not 'other'"):
        Store.open(path, "other")
    assert _files(path) == before


def test_unknown_schema_is_refused(tmp_path):
    path = str(tmp_path / "d")
    Store.open(path, "book1").close()
    with sqlite3.connect(os.path.join(path, "store.sqlite")) as db:
        db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    with pytest.raises(StoreError, match="schema 99"):
        Store.open(path, "book1")


def test_corrupt_store_is_refused_and_not_overwritten(tmp_path):
    path = tmp_path / "d"
    path.mkdir()
    garbage = b"this is not a database" * 100
    (path / "store.sqlite").write_bytes(garbage)
    with pytest.raises(StoreError, match="corrupt"):
        Store.open(str(path), "book1")
    assert (path / "store.sqlite").read_bytes() == garbage


def test_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        Store.open(str(target), "book1")
    with pytest.raises(StoreError, match="cannot use data directory"):
        Store.open(str(target / "below"), "book1")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_unwritable_directory_is_refused(tmp_path):
    path = tmp_path / "d"
    path.mkdir()
    path.chmod(0o500)
    try:
        with pytest.raises(StoreError):
            Store.open(str(path), "book1")
    finally:
        path.chmod(0o700)


def _files(path):
    return sorted((name, os.path.getsize(os.path.join(path, name))) for name in os.listdir(path)
                  if not name.endswith(("-wal", "-shm")))


def test_the_empty_account_is_stored_without_an_index_entry(store):
    store.write(Batch(events=[order(10, "a", 1, ""), order(20, "b", 1, "")],
                      fills=[StoredFill(0, 20, ("b", 1), ("a", 1), 100, 5, "sell", "", "")]))
    assert [f.taker_account for f in store.fills_page(-1, 10)] == [""]
    assert store.events_page(None, 10)[0].account == ""
    assert store._read.execute("SELECT count(*) FROM events WHERE acct IS NULL").fetchone() == (2,)


def test_an_empty_store_file_is_corrupt_and_left_empty(tmp_path):
    path = tmp_path / "d"
    path.mkdir()
    (path / "store.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="corrupt"):
        Store.open(str(path), "book1")
    assert (path / "store.sqlite").read_bytes() == b""


def test_a_damaged_row_is_reported_at_recovery(tmp_path):
    from node.store.recover import identity, recover

    path = str(tmp_path / "d")
    s = Store.open(path, "book1")
    s.write(Batch(events=[order(10, "a", 1)], meta={"replica": "a"}))
    s._db.execute("UPDATE events SET body = x'ff00'")
    with pytest.raises(StoreError, match="cannot be read back"):
        recover(s, identity(s, "a"))
    s._db.execute("UPDATE meta SET value = 7 WHERE key = 'replica'")
    s.meta["replica"] = 7
    with pytest.raises(StoreError, match="no valid replica id"):
        identity(s, "a")
    s.close()


def test_a_store_with_events_but_no_replica_id_is_refused(tmp_path):
    from node.store.recover import identity

    path = str(tmp_path / "d")
    s = Store.open(path, "book1")
    s.write(Batch(events=[order(10, "a", 1)]))
    with pytest.raises(StoreError, match="names no replica id"):
        identity(s, "a")
    assert "replica" not in s.meta  # nothing minted
    s.close()


def test_pages_are_exact_when_many_events_share_a_clock(store):
    # a chain that breaks the clock rule is stored too: many events, one clock
    events = [order(50, "b", seq) for seq in range(1, 31)] + [order(50, "a", 1), order(60, "a", 2)]
    store.write(Batch(events=events))
    walked, after = [], None
    while page := store.events_page(after, 7):
        walked += page
        after = page[-1].position
    assert walked == sorted(events)


def test_recovery_replays_a_stored_event_that_sorts_below_the_snapshot(store):
    from crdtbook.codec import encode_snapshot
    from crdtbook.replica import Replica
    from node.store.recover import recover

    replica = Replica("a", track_fresh=True)
    replica.bootstrap(now_ms=1_000)
    replica.place("sell", "1", "10", now_ms=1_001)
    assert replica.frontier() > 0  # alone: everything is final at once
    snap = replica.snapshot_state()
    store.write(Batch(events=replica.take_fresh(), meta={"replica": "a"},
                      snapshot=(snap.final, snap.fills_base, encode_snapshot(snap))))
    late = order(5, "zz", 1)  # arrived after the snapshot, below its F
    store.write(Batch(events=[late]))
    recovered, replayed = recover(store, "a")
    assert replayed == 1 and recovered.state.get("zz", 1) == late
    assert recovered.events_total() == store.event_count()


def test_amounts_past_64_bits_round_trip(tmp_path):
    """Amounts go up to 10^12 whole, 10^20 units: past SQLite's integers (a fill of
    that size once failed the store of every node at compaction; found by
    tests/test_openapi.py)."""
    most = 10**20
    store = Store.open(str(tmp_path / "d"), "book1")
    a1, b1 = order(10, "a", 1), order(20, "b", 1)
    store.write(Batch(events=[a1, b1]))
    store.write(Batch(orders=[FinalOrder("a", 1, "filled", most, None),
                              FinalOrder("b", 1, "filled", 2**63 - 1, None)],
                      fills=[StoredFill(0, 20, ("b", 1), ("a", 1), most, most - 1, "buy",
                                        "bob", "alice"),
                             StoredFill(1, 21, ("b", 1), ("a", 1), 5, 2**63, "buy", "", "")]))
    store.close()
    store = Store.open(str(tmp_path / "d"), "book1")
    assert store.order("a", 1)[1].filled == most
    assert store.order("b", 1)[1].filled == 2**63 - 1  # the largest that stays an integer
    assert [(f.price, f.qty) for f in store.fills_page(-1, 10)] == [(most, most - 1),
                                                                   (5, 2**63)]
    assert [f.index for f in store.fills_page(-1, 10, account="alice")] == [0]
    store.close()
