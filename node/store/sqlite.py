"""The embedded store: one node's durable state in one SQLite file (WAL mode).

Theory of operation
-------------------
A node's data directory holds ``store.sqlite`` (plus SQLite's ``-wal`` and
``-shm`` files) and ``LOCK``. The store keeps:

* ``meta``: schema version, book name, the replica id, the clock lease (see
  journal.py) and whether this replica has left or was evicted;
* ``events``: every event that compaction took out of memory, its own and
  its peers', keyed by position ``(clock, replica, seq)`` so history pages in
  the order every node agrees on; a second index finds an event by its dot.
  A row is written once, when its event leaves memory, with an order's final
  state (status, filled, reason). Events still in memory live in the signed
  blocks (``blocks``: every block the node took or sealed, in the same
  transaction as anything that depends on it), from which recovery reads
  them back; an event no stored block holds (none is expected) gets its row
  at arrival instead, as schema 2 wrote every event;
* ``fills``: every final fill, numbered in replay order (fill number ``i`` is
  the same fill on every node), with the accounts of both sides;
* ``accounts``: this node's client accounts (node/store/accounts.py): a
  name, the SHA-256 of its token (never the token), when it was made and,
  once revoked, when; names are never reused;
* ``snapshot``: the replica's last standing (``crdtbook.codec`` snapshot),
  written with the history that compaction took out of memory, in the same
  transaction. A restart installs it and replays the events after it.

Replica ids and account names are interned in ``names`` (small integers in
the big tables keep a row near 60 bytes); the empty account is NULL and stays
out of the account indexes.

Amounts (a fill's price and quantity, an order's filled quantity) are
integer units of 10^-8, up to 10^20: past SQLite's 64-bit integers. One that
does not fit is kept as a 9-byte big-endian BLOB (``_units_in``), read back
by ``_units_out``; no query compares them, and smaller ones stay integers, so
older stores read as they are.

Rules this module keeps
-----------------------
* Synchronous: whatever waits for the disk runs on a worker thread
  (journal.py hands it to ``trio.to_thread``); a transaction's rows are
  written (``stage``) on the event loop, its ``commit`` on a thread, one
  after the other, never two at once. One connection writes, one reads,
  never both on the same connection at once.
* One ``write`` (``stage`` then ``commit``) is one transaction; with
  ``synchronous=FULL`` its commit is one fsync of the WAL. Nothing is
  acknowledged before that commit.
* Opening never repairs, resets or overwrites: a locked, unwritable or corrupt
  directory, another book's store or an unknown schema raises ``StoreError``
  with a sentence a person can act on, and leaves the files as they were.
  The one write at open: an older schema listed in ``UPGRADES`` has its
  number raised (one transaction), once the store passed every check.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from dataclasses import dataclass, field
from itertools import chain
from typing import NamedTuple

import cbor2

from crdtbook.codec import event_from_wire, event_to_wire
from crdtbook.events import ORDER
from crdtbook.feed import Tip

from .. import logs

SCHEMA_VERSION = 3  # 2: signed feeds (the blocks table); 3: rows written at compaction
# Schema 2 wrote every event's row at arrival (and its final state later): such a
# store is schema 3 as it is (its extra rows are duplicates of its blocks), so
# opening one only raises the number, which keeps an older crdtbook, which
# recovers from rows alone, from opening it afterwards.
UPGRADES = {2: 3}
STORE_FILE = "store.sqlite"
LOCK_FILE = "LOCK"
STATUSES = ("open", "filled", "cancelled", "rejected")
_STATUS_CODES = {status: code for code, status in enumerate(STATUSES)}

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE events (
    clock INTEGER NOT NULL, rid INTEGER NOT NULL, seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    acct INTEGER,
    status INTEGER, filled INTEGER, reason TEXT,
    PRIMARY KEY (clock, rid, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_dot ON events (rid, seq);
CREATE INDEX events_account ON events (acct, clock) WHERE acct IS NOT NULL;
CREATE TABLE fills (
    idx INTEGER PRIMARY KEY, clock INTEGER NOT NULL,
    taker_rid INTEGER NOT NULL, taker_seq INTEGER NOT NULL,
    maker_rid INTEGER NOT NULL, maker_seq INTEGER NOT NULL,
    price INTEGER NOT NULL, qty INTEGER NOT NULL, side INTEGER NOT NULL,
    taker_acct INTEGER, maker_acct INTEGER
);
CREATE INDEX fills_taker ON fills (taker_acct, idx) WHERE taker_acct IS NOT NULL;
CREATE INDEX fills_maker ON fills (maker_acct, idx) WHERE maker_acct IS NOT NULL;
CREATE TABLE blocks (
    rid INTEGER NOT NULL, last INTEGER NOT NULL, first INTEGER NOT NULL,
    prev BLOB NOT NULL, hash BLOB NOT NULL, sig BLOB NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (rid, last)
) WITHOUT ROWID;
CREATE TABLE accounts (
    name TEXT PRIMARY KEY, digest BLOB NOT NULL UNIQUE,
    created INTEGER NOT NULL, revoked INTEGER
) WITHOUT ROWID;
CREATE TABLE snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    final INTEGER NOT NULL, fills_base INTEGER NOT NULL, body BLOB NOT NULL
);
"""


class StoreError(Exception):
    """The store cannot be used; the message says why and what to do."""


class FinalOrder(NamedTuple):
    """An order's final state, written into its event row (a named tuple: one is
    made for every order that leaves memory, on every node)."""

    replica: str
    seq: int
    status: str
    filled: int
    reason: str | None


class StoredFill(NamedTuple):  # one per final fill, on every node: a cheap tuple
    index: int  # fill number in replay order, the same on every node
    clock: int  # the taker's clock
    taker: tuple[str, int]
    maker: tuple[str, int]
    price: int
    qty: int
    taker_side: str
    taker_account: str
    maker_account: str


@dataclass(frozen=True)
class AccountRow:
    """A client account: the token itself is never stored, only its SHA-256."""

    name: str
    digest: bytes
    created: int  # unix ms
    revoked: int | None = None  # unix ms, once revoked


@dataclass
class Batch:
    """Everything one group commit writes, in one transaction."""

    events: list = field(default_factory=list)
    blocks: list = field(default_factory=list)  # feedindex.Unwritten: signed feed blocks
    orders: list[FinalOrder] = field(default_factory=list)  # final states of rows held
    # rows of events leaving memory, each written once with its final state:
    # (event, FinalOrder or None: an order's, None for cancels and membership events)
    rows: list = field(default_factory=list)
    # id(event) -> (event, its fields after the clock or None) cut at arrival (see
    # journal.py): each row takes (pops) its own; one without is encoded
    bodies: dict = field(default_factory=dict)
    fills: list[StoredFill] = field(default_factory=list)
    snapshot: tuple[int, int, bytes] | None = None  # (final, fills_base, body)
    meta: dict = field(default_factory=dict)
    accounts: list[AccountRow] = field(default_factory=list)  # made, rotated or revoked
    # id(event) -> (event, (canonical CBOR, its fields after the clock)): slices of
    # the batch's blocks (crdtbook.feedwire.encodings), each event's body cut from them
    encoded: dict = field(default_factory=dict)
    held: int = 0  # events the batch's blocks hold without rows (counted, not written)

    def __bool__(self) -> bool:
        return bool(self.events or self.blocks or self.orders or self.rows or self.fills
                    or self.snapshot or self.meta or self.accounts or self.held)


def _event_body(event, encoded: dict) -> bytes:
    """The event's CBOR without its position (that lives in the key columns):
    ``[tag, fields after the clock...]``. Cut from the event's canonical CBOR
    in its block when the batch holds it (``encoded``, see
    crdtbook.feedwire.encodings), else encoded."""
    hit = encoded.get(id(event))
    return row_body(event, None if hit is None else (hit[0], hit[1][1]))


# A row body's first two bytes, by its event's kind: feedwire's pattern slices
# an order only after ``\x89\x00`` and a cancel only after ``\x86\x01`` (never a
# membership event), and a row's array is three entries shorter (no replica,
# seq or clock). bytearrays: a row body made from one is a bytearray, which the
# sqlite3 module binds as the same BLOB without trying to adapt it (it tries
# for every ``bytes`` and ``None``: a few thousand instructions a parameter).
_ORDER_HEAD, _CANCEL_HEAD = bytearray(b"\x86\x00"), bytearray(b"\x83\x01")


def row_body(event, kept):
    """The row body of ``event`` from ``kept``, ``(event, its fields after the
    clock)`` as the journal keeps them (see Journal._take_bodies), or encoded
    anew when there is none for this very object. Same bytes either way (a
    bytearray when made from the tail)."""
    if kept is not None and kept[0] is event and kept[1] is not None:
        return (_ORDER_HEAD if event.kind == ORDER else _CANCEL_HEAD) + kept[1]
    wire = event_to_wire(event)
    return cbor2.dumps([wire[0], *wire[4:]])


def _event_from_row(clock: int, name: str, seq: int, body: bytes):
    tag, *rest = cbor2.loads(body)
    return event_from_wire([tag, name, seq, clock, *rest], "stored event")


class Store:
    """One node's data directory. Open with ``Store.open``; close when done."""

    def __init__(self, directory: str, lock_fd: int, writer: sqlite3.Connection,
                 reader: sqlite3.Connection) -> None:
        self.directory = directory
        self.ephemeral = False  # a throwaway store (see datadir.open_store)
        self._lock_fd = lock_fd
        self._db = writer
        self._read = reader
        self._index: sqlite3.Connection | None = None  # see index_connection
        self._ids: dict[str, int] = dict(
            (name, id_) for id_, name in writer.execute("SELECT id, name FROM names"))
        self._ids_before = self._ids  # as they were before the transaction under way
        self._meta_staged: dict = {}  # meta written by the transaction under way
        self.meta: dict = dict(writer.execute("SELECT key, value FROM meta"))

    # -- opening -------------------------------------------------------------
    @classmethod
    def open(cls, directory: str, book: str, *, fsync: bool = True) -> Store:
        """Open (or create) the store in ``directory`` for ``book``; StoreError if unusable."""
        directory = os.path.abspath(directory)
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise StoreError(f"data directory {directory} exists and is not a directory")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            lock_fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot use data directory {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreError(f"data directory {directory} is in use by another node "
                                 "(its LOCK is held); stop that node or pick another "
                                 "--data-dir") from None
            raise StoreError(f"cannot lock data directory {directory}: {exc.strerror}") from None
        try:
            if not os.access(directory, os.W_OK):
                raise StoreError(f"data directory {directory} is not writable")
            path = os.path.join(directory, STORE_FILE)
            fresh = not os.path.exists(path)
            if not fresh and not _looks_like_sqlite(path):
                raise StoreError(f"the store in {directory} is corrupt (not an SQLite database); "
                                 "it was left as it is: restore a backup or move it aside")
            writer = _connect(path, fsync)
            reader = _connect(path, fsync)
            try:
                if fresh:  # schema and meta in one transaction: a crash leaves neither
                    writer.executescript(
                        "BEGIN;" + _SCHEMA
                        + f"INSERT INTO meta VALUES ('schema', {SCHEMA_VERSION});"
                        + f"INSERT INTO meta VALUES ('book', {_sql_text(book)});COMMIT;")
                store = cls(directory, lock_fd, writer, reader)
                store._check(book, path)
            except BaseException:
                writer.close()
                reader.close()
                raise
        except sqlite3.DatabaseError as exc:
            os.close(lock_fd)
            raise StoreError(_explain(exc, directory)) from None
        except BaseException:
            os.close(lock_fd)
            raise
        return store

    def _check(self, book: str, path: str) -> None:
        schema = self.meta.get("schema")
        if schema != SCHEMA_VERSION and schema not in UPGRADES:
            raise StoreError(f"{path} has store schema {schema!r}; this crdtbook reads schema "
                             f"{SCHEMA_VERSION} only (nothing was changed)")
        if self.meta.get("book") != book:
            raise StoreError(f"{path} holds book {self.meta.get('book')!r}, not {book!r}; "
                             "use --book to match it or another --data-dir")
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreError(f"{path} is corrupt ({'; '.join(problems)[:300]}); it was left "
                             "as it is: restore a backup or move it aside")
        if schema in UPGRADES:
            self._upgrade(schema, path)

    def _upgrade(self, schema: int, path: str) -> None:
        """Raise an older schema to this one (see UPGRADES), in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                             (UPGRADES[schema],))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self.meta["schema"] = UPGRADES[schema]
        logs.info("store.upgraded", path=path, schema_from=schema, schema_to=UPGRADES[schema])

    def close(self) -> None:
        for conn in (self._db, self._read, self._index):
            if conn is None:
                continue
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- writing ---------------------------------------------------------------
    def _intern(self, name: str) -> int:
        id_ = self._ids.get(name)
        if id_ is None:
            id_ = self._db.execute("INSERT INTO names (name) VALUES (?)", (name,)).lastrowid
            self._ids[name] = id_
        return id_

    def write(self, batch: Batch) -> None:
        """Commit ``batch`` as one transaction (one fsync); StoreError on failure."""
        self.stage(batch)
        self.commit()

    def stage(self, batch: Batch) -> None:
        """Open the transaction of ``batch`` and write its rows (no I/O to wait for:
        the pages stay in SQLite's cache); ``commit`` makes it durable. StoreError
        (rolled back) on failure.

        The journal stages on the event loop and commits on a worker thread:
        staging is mostly Python work that holds the GIL anyway, and on a
        thread SQLite gives the GIL up and takes it back from the busy loop at
        every row; the commit is one call that waits for the disk with the
        GIL released (bench/journal.py: the same CPU per event, commits a
        fifth to a third quicker beside a busy loop)."""
        db, intern = self._db, self._intern
        self._ids_before = dict(self._ids)
        self._meta_staged = batch.meta
        try:
            db.execute("BEGIN")
            if batch.events:
                encoded = batch.encoded
                db.executemany(
                    "INSERT OR IGNORE INTO events (clock, rid, seq, body, acct) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(e.clock, intern(e.replica), e.seq, _event_body(e, encoded),
                      intern(e.account) if e.kind == ORDER and e.account else None)
                     for e in batch.events])
            if batch.blocks:
                db.executemany(
                    "INSERT OR IGNORE INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?)",
                    # bytearrays: bound as the same BLOBs, without the sqlite3
                    # module's attempt to adapt each bytes (see _ORDER_HEAD)
                    [(intern(b.replica), b.last, b.first, bytearray(prev), bytearray(h),
                      bytearray(b.sig), bytearray(b.body))
                     for prev, h, b in batch.blocks])
            if batch.rows:
                plain, other = self._row_values(batch.rows, batch.bodies)
                _insert_rows(db, "INSERT OR REPLACE INTO events VALUES ", _PLAIN_ROW, plain)
                if other:
                    db.executemany(
                        "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", other)
            if batch.orders:
                db.executemany(
                    "UPDATE events SET status = ?, filled = ?, reason = ? "
                    "WHERE rid = ? AND seq = ?",
                    [(STATUSES.index(o.status), _units_in(o.filled), o.reason,
                      intern(o.replica), o.seq)
                     for o in batch.orders])
            if batch.fills:
                _insert_rows(
                    db, "INSERT OR IGNORE INTO fills VALUES ", _FILL_ROW,
                    self._fill_values(batch.fills))
            if batch.snapshot is not None:
                db.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?)",
                           batch.snapshot)
            if batch.accounts:
                db.executemany("INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?)",
                               [(a.name, a.digest, a.created, a.revoked)
                                for a in batch.accounts])
            if batch.meta:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               sorted(batch.meta.items()))
        except (sqlite3.Error, OverflowError) as exc:
            self._rolled_back()
            raise StoreError(f"writing to the store failed: {exc}") from None

    def _row_values(self, rows: list, bodies: dict) -> tuple[list, list]:
        """The events table's values of ``rows`` (``(event, FinalOrder or None)``),
        each body made from the slices taken out of ``bodies`` (cut at arrival)
        or else encoded: ``(plain, other)``, an order with an account and no
        reason (nearly every row) in ``plain`` without its NULL reason, every
        other row whole. The sqlite3 module tries to adapt every ``None`` it
        binds (a few thousand instructions each): the plain rows' statement
        writes their NULL itself."""
        ids, intern, take, codes = self._ids, self._intern, bodies.pop, _STATUS_CODES
        order_head, big = _ORDER_HEAD, _INT64
        plain, other = [], []
        for e, o in rows:
            kept = take(id(e), None)
            if o is not None:
                if kept is not None and kept[0] is e and kept[1] is not None:
                    body = order_head + kept[1]
                else:
                    body = row_body(e, None)
                # one unpacking each (tuple subclasses: each field read is a call)
                clock, replica, seq, _, _, _, _, _, acct = e
                _, _, status, filled, reason = o
                rid = ids.get(replica) or intern(replica)
                if filled > big:
                    filled = _units_in(filled)
                if acct and reason is None:
                    plain.append((clock, rid, seq, body, ids.get(acct) or intern(acct),
                                  codes[status], filled))
                else:
                    other.append((clock, rid, seq, body,
                                  (ids.get(acct) or intern(acct)) if acct else None,
                                  codes[status], filled, reason))
            else:
                other.append((e.clock, ids.get(e.replica) or intern(e.replica), e.seq,
                              row_body(e, kept), None, None, None, None))
        return plain, other

    def _fill_values(self, fills: list) -> list:
        """The fills table's values of ``fills`` (``StoredFill``): names interned
        by a lookup first (a call of ``_intern`` only for a name new here), each
        fill unpacked once."""
        ids, intern, big = self._ids, self._intern, _INT64
        values = []
        for index, clock, (taker, tseq), (maker, mseq), price, qty, side, ta, ma in fills:
            values.append((index, clock, ids.get(taker) or intern(taker), tseq,
                           ids.get(maker) or intern(maker), mseq,
                           price if price <= big else _units_in(price),
                           qty if qty <= big else _units_in(qty),
                           0 if side == "buy" else 1,
                           ta and (ids.get(ta) or intern(ta)),
                           ma and (ids.get(ma) or intern(ma))))
        return values

    def commit(self) -> None:
        """Commit what ``stage`` wrote (one fsync); StoreError (rolled back) on failure."""
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rolled_back()
            raise StoreError(f"writing to the store failed: {exc}") from None
        self.meta.update(self._meta_staged)
        self._meta_staged = {}

    def _rolled_back(self) -> None:
        self._ids = self._ids_before  # names inserted in the failed transaction are gone
        self._meta_staged = {}
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    # -- reading (on the reader connection) ------------------------------------
    def snapshot(self) -> tuple[int, int, bytes] | None:
        return self._read.execute("SELECT final, fills_base, body FROM snapshot").fetchone()

    def events_after(self, clock: int, limit: int = 50_000):
        """Every stored event with a clock above ``clock``, in position order, in pages."""
        after = (clock, "", 0)
        while True:
            page = self.events_page(after, limit)
            if not page:
                return
            yield page
            after = page[-1].position

    def events_page(self, after: tuple[int, str, int] | None, limit: int) -> list:
        """Up to ``limit`` events after position ``after``, in position order."""
        rows = self._by_position(
            "SELECT e.clock, n.name, e.seq, e.body FROM events e "
            "JOIN names n ON n.id = e.rid WHERE 1", [], after, limit)
        return [_event_from_row(*row) for row in rows]

    def _by_position(self, sql: str, args: list, after, limit: int) -> list:
        """The first ``limit`` rows after position ``after``, in position order.

        ``sql`` selects ``clock, name, seq, ...`` and ends in a WHERE clause.
        Rows are keyed by interned ids, whose order is not the names' order, so
        the query orders by clock only; every clock value at the edges of the
        page (the cursor's own, the last one fetched) is then read whole, so
        the sort by position is exact however many rows share a clock.
        """
        read = self._read.execute
        start = after[0] if after else -1
        rows = read(f"{sql} AND e.clock > ? ORDER BY e.clock LIMIT ?",
                    [*args, start, limit + 1]).fetchall()
        if len(rows) > limit:
            edge = rows[-1][0]
            rows = [r for r in rows if r[0] != edge]
            rows += read(f"{sql} AND e.clock = ?", [*args, edge]).fetchall()
        if after:
            rows += [r for r in read(f"{sql} AND e.clock = ?", [*args, start]).fetchall()
                     if (r[0], r[1], r[2]) > after]
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        return rows[:limit]

    def events_of(self, replica: str, low: int, high: int) -> dict[int, object]:
        """Events of ``replica`` with seqs in low..high, by seq."""
        rid = self._ids_read(replica)
        if rid is None:
            return {}
        rows = self._read.execute(
            "SELECT clock, seq, body FROM events WHERE rid = ? AND seq BETWEEN ? AND ?",
            (rid, low, high)).fetchall()
        return {seq: _event_from_row(clock, replica, seq, body) for clock, seq, body in rows}

    def tips(self) -> dict[str, Tip]:
        """The newest stored block of every origin: how far its signed feed is held."""
        rows = self._read.execute(
            "SELECT n.name, b.last, b.hash FROM blocks b JOIN names n ON n.id = b.rid "
            "WHERE b.last = (SELECT MAX(last) FROM blocks WHERE rid = b.rid)").fetchall()
        return {name: Tip(last, bytes(hash_)) for name, last, hash_ in rows}

    def index_connection(self) -> sqlite3.Connection:
        """A connection for the block index's lookups, on the opening thread (see
        node/store/feedindex.py); closed with the store."""
        if self._index is None:
            self._index = _connect(os.path.join(self.directory, STORE_FILE), False)
        return self._index

    def order(self, replica: str, seq: int):
        """(event, final state or None) of a stored order, or None."""
        rid = self._ids_read(replica)
        if rid is None:
            return None
        row = self._read.execute(
            "SELECT clock, body, status, filled, reason FROM events WHERE rid = ? AND seq = ?",
            (rid, seq)).fetchone()
        if row is None:
            return None
        event = _event_from_row(row[0], replica, seq, row[1])
        if event.kind != ORDER:
            return None
        return event, _final(replica, seq, row[2:])

    def final_orders_page(self, after: tuple[int, str, int] | None, limit: int,
                          account: str | None = None, status: str | None = None) -> list:
        """Final orders after position ``after``: [(event, FinalOrder)], position order."""
        sql = ("SELECT e.clock, n.name, e.seq, e.body, e.status, e.filled, e.reason "
               "FROM events e JOIN names n ON n.id = e.rid WHERE e.status IS NOT NULL")
        args: list = []
        if account is not None:
            acct = self._ids_read(account)
            if acct is None:
                return []
            sql += " AND e.acct = ?"
            args.append(acct)
        if status is not None:
            sql += " AND e.status = ?"
            args.append(STATUSES.index(status))
        return [(_event_from_row(clock, name, seq, body), _final(name, seq, state))
                for clock, name, seq, body, *state
                in self._by_position(sql, args, after, limit)]

    def fill_count(self) -> int:
        row = self._read.execute("SELECT max(idx) FROM fills").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def fills_page(self, after: int, limit: int, account: str | None = None) -> list[StoredFill]:
        """Final fills numbered above ``after`` (-1 for the first), oldest first."""
        sql = ("SELECT f.idx, f.clock, tr.name, f.taker_seq, mr.name, f.maker_seq, f.price, "
               "f.qty, f.side, ta.name, ma.name FROM fills f "
               "JOIN names tr ON tr.id = f.taker_rid JOIN names mr ON mr.id = f.maker_rid "
               "LEFT JOIN names ta ON ta.id = f.taker_acct "
               "LEFT JOIN names ma ON ma.id = f.maker_acct "
               "WHERE f.idx > ?")
        args: list = [after]
        if account is not None:
            acct = self._ids_read(account)
            if acct is None:
                return []
            sql += " AND (f.taker_acct = ? OR f.maker_acct = ?)"
            args += [acct, acct]
        sql += " ORDER BY f.idx LIMIT ?"
        args.append(limit)
        return [StoredFill(idx, clock, (tn, ts), (mn, ms), _units_out(price), _units_out(qty),
                           "buy" if side == 0 else "sell", ta or "", ma or "")
                for idx, clock, tn, ts, mn, ms, price, qty, side, ta, ma
                in self._read.execute(sql, args).fetchall()]

    def _ids_read(self, name: str) -> int | None:
        row = self._read.execute("SELECT id FROM names WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def accounts(self) -> list[AccountRow]:
        """Every account, revoked ones included, by name (read on the writer's
        connection: called once, while the node opens, before the journal runs)."""
        return [AccountRow(name, bytes(digest), created, revoked)
                for name, digest, created, revoked in self._db.execute(
                    "SELECT name, digest, created, revoked FROM accounts ORDER BY name")]

    def event_count(self) -> int:
        """Rows in the events table (events that left memory, and schema 2's rows)."""
        return self._read.execute("SELECT count(*) FROM events").fetchone()[0]

    def holds_events(self) -> bool:
        """Whether any event is stored: as a row or in a signed block."""
        return any(self._read.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                   for table in ("events", "blocks"))

    def block_origins(self) -> list[str]:
        """Every origin some stored block is of, by name (recovery's first question)."""
        return sorted(name for (name,) in self._read.execute(
            "SELECT n.name FROM names n WHERE n.id IN (SELECT DISTINCT rid FROM blocks)"))

    def blocks_past(self, replica: str, seq: int) -> list[tuple[int, bytes, bytes]]:
        """``(first, body, sig)`` of every stored block of ``replica`` ending past
        ``seq``, oldest first."""
        return [(first, body, sig) for first, _, body, sig, _, _ in
                self.linked_blocks_past(replica, seq)]

    def linked_blocks_past(self, replica: str, seq: int) -> list[tuple]:
        """``(first, last, body, sig, prev, hash)`` of the same blocks: recovery
        checks each body against the hash chain (see recover.py)."""
        rid = self._ids_read(replica)
        if rid is None:
            return []
        return [(first, last, bytes(body), bytes(sig), bytes(prev), bytes(hash_))
                for first, last, body, sig, prev, hash_ in self._read.execute(
                    "SELECT first, last, body, sig, prev, hash FROM blocks "
                    "WHERE rid = ? AND last > ? ORDER BY last", (rid, seq))]


# Rows go in statements of ``ROWS_PER_STATEMENT`` rows each (``VALUES (...), (...)``),
# the rest one by one: per statement run the sqlite3 module and SQLite have a cost
# of their own (the step, the halt, the reset, the GIL given up and taken back),
# a few thousand instructions that a row written alone pays by itself.
ROWS_PER_STATEMENT = 32
_PLAIN_ROW = "(?, ?, ?, ?, ?, ?, ?, NULL)"  # an events row with no reason
_FILL_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _insert_rows(db: sqlite3.Connection, head: str, row: str, rows: list) -> None:
    """Execute ``head`` + ``row`` for every one of ``rows``, in their order,
    ``ROWS_PER_STATEMENT`` rows a statement (the same rows, one statement per
    row, give the same table)."""
    many = len(rows) - len(rows) % ROWS_PER_STATEMENT
    if many:
        width = len(rows[0]) * ROWS_PER_STATEMENT
        flat = list(chain.from_iterable(rows[:many]))
        db.executemany(head + ", ".join([row] * ROWS_PER_STATEMENT),
                       [flat[i:i + width] for i in range(0, len(flat), width)])
    if many < len(rows):
        db.executemany(head + row, rows[many:])


def _final(replica: str, seq: int, state) -> FinalOrder | None:
    status, filled, reason = state
    if status is None:
        return None
    return FinalOrder(replica, seq, STATUSES[status], _units_out(filled), reason)


_INT64 = 2**63 - 1
UNITS_BYTES = 9  # 10^20 units (10^12 whole, the most an amount may be) < 2^72


def _units_in(units: int) -> int | bytes:
    """An amount in units as a column value: an integer, or a BLOB past 64 bits."""
    return units if units <= _INT64 else units.to_bytes(UNITS_BYTES, "big")


def _units_out(value: int | bytes) -> int:
    return value if isinstance(value, int) else int.from_bytes(value, "big")


def _sql_text(text: str) -> str:
    """A SQL string literal (book names are checked: letters, digits, '.', '_', '-')."""
    return "'" + text.replace("'", "''") + "'"


def _looks_like_sqlite(path: str) -> bool:
    """Check the file's header before SQLite touches it: SQLite would take an empty
    file for a new database and write into it."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _connect(path: str, fsync: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
    return conn


def _explain(exc: sqlite3.DatabaseError, directory: str) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (f"the store in {directory} is corrupt ({text}); it was left as it is: restore "
                "a backup or move it aside")
    if "readonly" in text or "unable to open" in text:
        return f"cannot write the store in {directory} ({text})"
    if "full" in text:
        return f"the disk holding {directory} is full ({text})"
    return f"the store in {directory} cannot be used ({text})"
