"""The history rows compaction writes are the same rows, whichever way they are written.

Store.stage writes an events row's body from the slices the journal kept at
arrival (a bytearray, so the sqlite3 module binds it without trying to adapt
it), sends the common orders (an account, no reason) through a statement that
writes their NULL itself, and writes rows ``ROWS_PER_STATEMENT`` to a
statement. Each of these must leave exactly the table that one plain
``INSERT`` per row, each body encoded anew with cbor2, leaves: the same
values, the same types (a BLOB stays a BLOB, NULL stays NULL), for any mix of
row shapes and any count around the statement's size.
"""

from __future__ import annotations

import random
import sqlite3

import cbor2
import pytest

from crdtbook.codec import event_to_wire
from crdtbook.events import CANCEL, ORDER, make_cancel, make_order
from crdtbook.feedwire import block_from_wire, encode_body, encodings
from node.store import sqlite as store_sqlite
from node.store.journal import Journal
from node.store.sqlite import STORE_FILE, Batch, FinalOrder, Store, StoredFill

ORIGINS = ("n" + "a" * 31, "n" + "b" * 31)
REASONS = (None, None, None, "post_only order would trade on arrival", "owner left")


def workload(count: int, seed: int) -> tuple[list, list]:
    """``count`` events of two origins (orders of every row shape, cancels) and
    their compaction rows ``(event, FinalOrder or None)``."""
    rng = random.Random(seed)
    clock = 1_764_000_000_000 << 16
    events = []
    for n in range(count):
        origin = ORIGINS[n % 2]
        seq = n // 2 + 1
        clock += rng.randint(1, 3)
        if seq > 1 and rng.random() < 0.2:
            events.append(make_cancel(clock, origin, seq, origin, seq - 1))
            continue
        # an account of 30 characters is past what feedwire slices: its block is
        # encoded anew, the other blocks sliced
        account = "x" * 30 if n % 29 == 5 else rng.choice(("alice", "bob", ""))
        events.append(make_order(clock, origin, seq, rng.choice(("buy", "sell")), "limit",
                                 rng.randint(1, 10**6) * 10**6,
                                 rng.choice((10**8, 10**18)), account))
    rows = []
    for e in events:
        if e.kind != ORDER:
            rows.append((e, None))
            continue
        status = rng.choice(("filled", "cancelled", "rejected", "open"))
        filled = rng.choice((0, e.qty, 2**63, 2**63 - 1))  # past 64 bits: a BLOB
        rows.append((e, FinalOrder(e.replica, e.seq, status, filled, rng.choice(REASONS))))
    return events, rows


def blocks_of(events: list) -> list:
    """Each origin's events in blocks of up to 7, as a peer's push decodes them:
    new event objects, equal to the ones given."""
    out = []
    for origin in ORIGINS:
        mine = [e for e in events if e.replica == origin]
        for start in range(0, len(mine), 7):
            chunk = mine[start:start + 7]
            out.append(block_from_wire([origin, chunk[0].seq, encode_body(chunk), b"s" * 64],
                                       "block"))
    return out


def reference_rows(rows: list) -> list:
    """The table one plain INSERT per row leaves: bodies encoded with cbor2."""
    out = []
    for e, o in rows:
        wire = event_to_wire(e)
        body = cbor2.dumps([wire[0], *wire[4:]])
        if o is None:
            out.append((e.clock, e.replica, e.seq, body, None, None, None, None))
        else:
            filled = o.filled if o.filled < 2**63 else o.filled.to_bytes(9, "big")
            out.append((e.clock, e.replica, e.seq, body, e.account or None,
                        store_sqlite.STATUSES.index(o.status), filled, o.reason))
    return sorted(out)


def table_rows(directory) -> list:
    db = sqlite3.connect(f"{directory}/{STORE_FILE}")
    try:
        return sorted(db.execute(
            "SELECT e.clock, n.name, e.seq, e.body, a.name, e.status, e.filled, e.reason "
            "FROM events e JOIN names n ON n.id = e.rid LEFT JOIN names a ON a.id = e.acct"))
    finally:
        db.close()


def table_types(directory) -> set:
    db = sqlite3.connect(f"{directory}/{STORE_FILE}")
    try:
        return set(db.execute(
            "SELECT typeof(body), typeof(acct), typeof(status), typeof(filled), "
            "typeof(reason) FROM events"))
    finally:
        db.close()


@pytest.mark.parametrize("count", [0, 1, 31, 32, 33, 64, 95, 200])
def test_compaction_rows_are_the_plain_inserts_rows(tmp_path, count):
    events, rows = workload(count, seed=count)
    blocks = blocks_of(events)
    # the journal keeps the slices of the objects its blocks decoded to: the rows
    # are of those objects, as a node's replica holds its peers' events
    decoded = {(e.replica, e.seq): e for b in blocks for e in b.events}
    rows = [(decoded[(e.replica, e.seq)], o) for e, o in rows]
    store = Store.open(str(tmp_path / "s"), "book", fsync=False)
    journal = Journal(store)
    for block in blocks:
        journal.held(list(block.events))
        batch = Batch(encoded=encodings([block]))
        journal._take_bodies(batch)
    sliced = sum(tail is not None for _, tail in journal.bodies.values())
    if count >= 33:
        assert 0 < sliced < count  # both ways are exercised: slices, and encoded anew
    journal.history([], [], None, rows)
    batch, journal._batch = journal._batch, Batch()
    journal._take_bodies(batch)
    store.write(batch)
    store.close()
    assert table_rows(tmp_path / "s") == reference_rows(rows)
    assert journal.bodies == {}  # every row took its slices out
    if count:
        types = table_types(tmp_path / "s")
        assert {t[0] for t in types} == {"blob"}
        assert {t[1] for t in types} <= {"integer", "null"}
        assert {t[4] for t in types} <= {"text", "null"}


@pytest.mark.parametrize("count", [1, 31, 32, 33, 70])
def test_fills_in_statements_of_many_rows_are_the_plain_inserts_rows(tmp_path, count):
    rng = random.Random(count)
    fills = [StoredFill(i, 1_000 + i, (ORIGINS[i % 2], i + 1), (ORIGINS[1 - i % 2], i + 2),
                        rng.choice((10**6, 2**63)), rng.choice((10**8, 10**20)),
                        rng.choice(("buy", "sell")), rng.choice(("alice", "")),
                        rng.choice(("bob", "")))
             for i in range(count)]
    store = Store.open(str(tmp_path / "s"), "book", fsync=False)
    store.write(Batch(fills=fills[:count // 2]))
    store.write(Batch(fills=fills))  # the first half again: ignored, as before
    assert store.fills_page(-1, 1_000) == fills
    assert store.fills_page(-1, 1_000, account="alice") == [
        f for f in fills if "alice" in (f.taker_account, f.maker_account)]
    store.close()


def test_row_heads_are_the_sliced_heads_three_entries_shorter():
    """The head a row body is made with (by the tag byte) is the one the slice's
    own first two bytes give, for every event feedwire slices."""
    events, _ = workload(300, seed=7)
    found = encodings(blocks_of(events))
    assert {e.kind for e, _ in found.values()} == {ORDER, CANCEL}
    for event, (full, tail) in found.values():
        assert store_sqlite.row_body(event, (event, tail)) == bytes((full[0] - 3, full[1])) + tail
        assert store_sqlite.row_body(event, (event, tail)) == store_sqlite.row_body(event, None)


def test_a_kept_entry_of_another_event_is_never_used(tmp_path):
    """An entry whose event is not the row's (by identity) gives the encoded body."""
    events, _ = workload(20, seed=3)
    found = encodings(blocks_of(events))
    other, (_, tail) = next(kept for kept in found.values() if kept[0].kind == ORDER)
    for e in events:
        assert store_sqlite.row_body(e, (other, tail)) == store_sqlite.row_body(e, None)
        assert store_sqlite.row_body(e, (e, None)) == store_sqlite.row_body(e, None)


def test_blocks_are_stored_as_the_blobs_they_were(tmp_path):
    """Blocks are bound as bytearrays: the same BLOBs, read back as the same bytes."""
    from node.store.feedindex import Unwritten

    events, _ = workload(40, seed=5)
    blocks = blocks_of(events)
    store = Store.open(str(tmp_path / "s"), "book", fsync=False)
    store.write(Batch(blocks=[Unwritten(bytes([i]) * 32, bytes([i + 1]) * 32, b)
                              for i, b in enumerate(blocks)]))
    for i, block in enumerate(blocks):
        [(first, last, body, sig, prev, hash_)] = [
            row for row in store.linked_blocks_past(block.replica, block.first - 1)
            if row[0] == block.first]
        assert (first, last, body, sig) == (block.first, block.last, block.body, block.sig)
        assert (prev, hash_) == (bytes([i]) * 32, bytes([i + 1]) * 32)
    store.close()
    db = sqlite3.connect(f"{tmp_path / 's'}/{STORE_FILE}")
    try:
        assert set(db.execute("SELECT typeof(prev), typeof(hash), typeof(sig), typeof(body) "
                              "FROM blocks")) == {("blob",) * 4}
    finally:
        db.close()
