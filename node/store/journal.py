"""Journal: the node's way to the store, with group commit, off the event loop.

Theory of operation
-------------------
The node appends what must become durable (new events, final history, the
snapshot, meta) with plain calls that never wait. A writer task takes
everything appended so far as one ``Batch``, writes its rows on the event
loop and commits it (the fsync) on a worker thread (``trio.to_thread``), so
one transaction and one fsync serve however many clients are waiting;
appends made meanwhile go into the next batch.

``await journal.sync()`` returns once everything appended *before the call*
is committed. It is the gate in front of every promise:

* a 201 to a client (the order is durable here);
* every push to a peer and every pull or join answer (a peer never holds an
  event this node could lose in a crash, so a restart never mints a second,
  different event under a seq a peer already has).

``before`` runs at the start of each flush: the node merges there any
pushed blocks still waiting (see Node.arrive), so they go into this batch.

Work that holds the event loop long (a compaction) runs ``between_flushes``:
the writer waits for it, so no own event is stamped and left waiting for a
commit through the stall; ``commit_held`` commits what it appended (its
rows) without ``before``, so no order stamped at that flush waits through
their staging either (node/cluster/gossip.py, ``_compacted_between_pushes``).

The node's own new events are *sealed* into one signed block per commit
(``sealer``, see crdtbook/door.py), written in the same transaction as the
events, and handed to ``sealed`` once durable: that is what gets pushed, so
one signature serves everything a commit makes durable.

Each flush also cuts the events of the blocks it writes out of their bodies
(crdtbook/feedwire.py ``encodings``): the rows' bodies and the digest
(``encoded``: the node hashes its pending events there) reuse those bytes
instead of encoding every event twice more.

An event is stored once: its signed block is written when it arrives (its
promise), its row only when compaction takes it out of memory (``history``),
with its final state, so no row is written and then updated. Between the
two, the slices its row body is made of wait in ``bodies`` (cut at its
arrival's flush, while the block's bytes are at hand, and filed there by C
calls alone); one that has none there (recovered at a restart) is encoded
at compaction. Events the node says no stored
block holds (``events``) get their row at arrival, as before.

If a commit fails (disk full, I/O error) the journal is *failed*: ``sync``
raises ``StoreFailed`` from then on, so the node acknowledges nothing and
sends nothing it has not made durable. The operator fixes the disk and
restarts the node; the events of the failed batch were never promised.

An ephemeral store (no fsync) writes a lone request's batch on the event loop
itself: a few page copies cost less than the hop to a worker thread and back.
Nothing it writes is a promise, so what nobody waits for (an order answered
without waiting, see node/api/app.py) gathers for up to ``LAZY_COMMIT_S``:
one commit, one signed block and one push then serve every order of that
window. A ``sync`` call cuts the wait short (a peer's pull, a read of history,
``ack=replicated``): whoever waits gets the commit at once. Such a gathered
batch, when nobody waits on it, is written on the event loop too (up to
``LAZY_INLINE_ROWS``): the hop to the thread would cost more than the write.

Reads of history run on their own connection and thread, one at a time, so
a long page never delays a commit (WAL lets both proceed).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter

import trio

from crdtbook.feedwire import encodings

from .. import logs
from .sqlite import Batch, Store, StoreError, row_body

COMMIT_WINDOW_S = 0.002
# An ephemeral store's commit of at most this many rows (a lone order or cancel and its
# block) skips the thread. Larger ones go to it, so the event loop goes on placing
# while they are written: bigger commits, fewer pushes (measured on 3 ephemeral nodes:
# inlining every small batch cost a third of pipelined WebSocket entry).
INLINE_ROWS = 3
# An ephemeral store's appends that nobody waits for are committed at most this late.
LAZY_COMMIT_S = 0.01
LAZY_INLINE_ROWS = 64


# an event's slices entry is (event, (canonical CBOR, fields after the clock)):
# what _take_bodies keeps of it, the tail, is read out by two C calls
_NO_SLICES = (None, (None, None))  # an event its block could not be sliced for
_SLICES = _TAIL = itemgetter(1)


class StoreFailed(Exception):
    """The store could not commit; the node promises nothing until restarted."""


class Journal:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._batch = Batch()
        self._held: list = []  # events appended by ``held`` since the last flush
        # id(event) -> (event, its fields after the clock, or None): cut at arrival,
        # taken by ``history`` rows (see _take_bodies); the event is kept with its
        # entry, so its id is never another's
        self.bodies: dict[int, tuple] = {}
        self._appended = 0  # appends so far (a counter, not a size)
        self._durable = 0  # appends committed
        # the first ``want_flush`` mark no ``before`` has served yet: a flush that
        # skips ``before`` (``commit_held``) must not count it durable
        self._unserved: int | None = None
        self._wake = trio.Event()
        self._committed = trio.Event()  # replaced after every commit
        self._write_lock = trio.CapacityLimiter(1)
        self._flushing = trio.Lock()  # batches commit one after another, in order
        self._crowded = False  # appends came while the last commit was under way
        self._hurry = trio.Event()  # someone waits in sync (an ephemeral store's cue)
        self._read_lock = trio.CapacityLimiter(1)
        self.failed: str | None = None
        self.commits = 0
        self.committed_events = 0
        # own blocks: made at each commit, handed on once durable (set by the node)
        self.sealer: Callable[[], list] = list
        self.sealed: Callable[[list], None] = _ignore
        self.index = None  # the door's StoreIndex: its new blocks go with every commit
        # told each commit's duration in seconds, thread hop included (node/metrics.py)
        self.timed: Callable[[float], None] = _ignore
        # called at the start of every flush, before the batch is taken: the node
        # merges the peers' blocks still waiting (see Node.arrive)
        self.before: Callable[[], None] = _nothing
        # handed the encodings of each flush's blocks (crdtbook.feedwire.encodings)
        # before they are written: the node hashes its pending events into the
        # digest with them, while the bytes exist
        self.encoded: Callable[[dict], None] = _ignore

    # -- appending (never waits) ---------------------------------------------
    def _touch(self) -> None:
        self._appended += 1
        self._wake.set()

    def events(self, events) -> None:
        """New events to write as rows now (ones no stored block holds)."""
        if events:
            self._batch.events.extend(events)
            self._touch()

    def held(self, events) -> None:
        """New events whose signed blocks this or an earlier batch writes: their rows
        wait for ``history`` (their bodies are cut at the flush, see ``bodies``)."""
        if events:
            self._held.extend(events)
            self._touch()

    def history(self, orders, fills, snapshot: tuple[int, int, bytes] | None,
                rows=()) -> None:
        """Final history that left memory: ``rows`` are ``(event, FinalOrder or None)``
        for every event that left, each written once, with its final state."""
        self._batch.orders.extend(orders)
        self._batch.rows.extend(rows)
        self._batch.fills.extend(fills)
        if snapshot is not None:
            self._batch.snapshot = snapshot
        self._touch()

    def account(self, row) -> None:
        self._batch.accounts.append(row)
        self._touch()

    def meta(self, **values) -> None:
        self._batch.meta.update(values)
        self._touch()

    def want_flush(self) -> int:
        """Wake the writer though nothing is appended yet: ``before`` will append
        (orders placed at the flush, node/api/orderentry.py). Returns the mark to
        ``sync`` on: the flush that commits it ran ``before`` after this call."""
        self._touch()
        if self._unserved is None:
            self._unserved = self._appended
        return self._appended

    @property
    def pending(self) -> bool:
        return self._durable < self._appended

    @property
    def flushing(self) -> bool:
        """A flush is under way (what it stamped is not durable, nor sent, yet)."""
        return self._flushing.locked()

    @contextlib.asynccontextmanager
    async def between_flushes(self):
        """Hold the writer off: entered once no flush is under way (the one under
        way, if any, committed and handed its sealed block on), left when the
        block ends; the next flush (its stamps, see ``before``) waits for it.
        For work that stalls the event loop (a compaction): during it, nothing
        stamped here waits unsent for its commit (docs/performance.md, rewinds,
        eighth pass)."""
        async with self._flushing:
            yield

    async def commit_held(self) -> None:
        """Inside ``between_flushes``: commit what is appended (a compaction's rows)
        without running ``before``: nothing is stamped or placed for it, so no own
        order waits through this commit's staging (rows of a compaction's ten
        thousand events hold the loop for a tenth of a second and more). A mark
        from ``want_flush`` stays pending: its orders are placed by the next flush."""
        await self._flush(run_before=False)

    # -- waiting -----------------------------------------------------------------
    def mark(self) -> int:
        """Where the appends stand now: ``sync(mark)`` waits for these and no later ones."""
        return self._appended

    async def sync(self, target: int | None = None) -> None:
        """Return once everything appended before this call (or before ``target`` was
        marked) is durable."""
        if target is None:
            target = self._appended
        if self._durable < target:
            self._hurry.set()
        while self._durable < target:
            if self.failed:
                raise StoreFailed(self.failed)
            await self._committed.wait()
        if self.failed:
            raise StoreFailed(self.failed)

    async def run(self) -> None:
        """The writer task: commit what was appended, batch after batch, until cancelled.

        A commit under way is finished even when the task is cancelled (the
        worker thread is not abandoned), so a graceful stop never cuts one.
        """
        while True:
            await self._wake.wait()
            if self.store.ephemeral and not self._hurry.is_set():
                # nothing promised waits on this commit: let more gather (see above)
                with trio.move_on_after(LAZY_COMMIT_S):
                    await self._hurry.wait()
            elif self._crowded:
                # Under load (appends kept coming while the last commit ran), let
                # them gather for a moment: one commit then serves many requests
                # and peers' events for one fsync and one thread hop. A node
                # serving one request at a time commits at once: one request
                # makes several appends (events, history, blocks), so counting
                # appends would make every lone request wait the window.
                await trio.sleep(COMMIT_WINDOW_S)
            self._hurry = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything appended so far (one batch), after any commit under way."""
        async with self._flushing:
            await self._flush()

    async def _flush(self, run_before: bool = True) -> None:
        if run_before:
            self.before()  # what it appends goes into this batch (or fails with it)
            self._unserved = None
        if self._wake.is_set():
            # a fresh event only once this one fired: a flush from another task
            # (the server's stop) must not swap out the event the writer waits on
            self._wake = trio.Event()
        if self.failed:
            return
        try:
            own = self.sealer()
        except Exception as exc:  # a bug: nothing unsealed may be promised or sent
            self.failed = f"sealing own events failed: {exc!r}"
            logs.error("store.failed", detail=self.failed)
            committed, self._committed = self._committed, trio.Event()
            committed.set()
            return
        written = self.index.take_unwritten() if self.index is not None else []
        if written:  # own blocks just sealed, and peers' blocks the door took
            self._batch.blocks.extend(written)
            self._touch()
            # their events' bytes, cut once from the blocks: the rows' bodies and
            # the digest reuse them instead of encoding every event twice more
            self._batch.encoded = encodings([w.block for w in written])
            self.encoded(self._batch.encoded)
        batch, target = self._batch, self._appended
        if not run_before and self._unserved is not None:
            target = self._unserved - 1  # what waits for ``before`` is not committed yet
            self._wake.set()  # the writer's next flush serves it, however it waits now
        self._batch = Batch()
        self._take_bodies(batch)
        if not batch:
            self._durable = target
        else:
            await self._commit(batch, target)
        self._crowded = self._appended > target
        if not self.failed:
            if written:
                self.index.committed(written)
            if own:
                self.sealed(own)
        committed, self._committed = self._committed, trio.Event()
        committed.set()

    async def _commit(self, batch: Batch, target: int) -> None:
        started = time.perf_counter()
        try:
            if self.store.ephemeral and (_small(batch, INLINE_ROWS) or (
                    not self._hurry.is_set() and _small(batch, LAZY_INLINE_ROWS))):
                # No fsync: a lone request's transaction is a few page copies, far
                # less than the thread hop (which doubled its time).
                self.store.write(batch)
                await trio.lowlevel.checkpoint()
            else:
                # the rows on the loop, the wait for the disk on a thread: row by row
                # on a thread, the writer takes the GIL back from the loop at every
                # row (Store.stage, bench/journal.py)
                self.store.stage(batch)
                with trio.CancelScope(shield=True):  # staged: the transaction is ended
                    await trio.to_thread.run_sync(self.store.commit,
                                                  limiter=self._write_lock)
        except Exception as exc:  # StoreError, or a bug: either way nothing more is promised
            self.failed = str(exc) if isinstance(exc, StoreError) else repr(exc)
            logs.error("store.failed", detail=self.failed,
                       hint="the node acknowledges nothing more; fix the disk and restart it")
        else:
            self.timed(time.perf_counter() - started)
            self._durable = target
            self.commits += 1
            self.committed_events += len(batch.events) + batch.held

    def _take_bodies(self, batch: Batch) -> None:
        """Keep the slices of the events held since the last flush, cut from this
        batch's blocks while they are at hand; the batch's rows take theirs out
        when written (``Batch.bodies``, ``sqlite.row_body``): an event's arrival
        flushes before, or with, its compaction.

        What is kept is ``(event, its fields after the clock)`` (None for an
        event its block could not be sliced for), filed by C calls only (map,
        zip, itemgetter, dict.update): no per-event frame or bytes here, where
        making each row body cost a frame's worth of bytecode and a bytes per
        event; the row body is made at compaction from the tail (its head is
        the kind's, see ``sqlite.row_body``). The tail alone, not the slices'
        own entry: that would keep the whole canonical CBOR too, about 160
        bytes more per event held. An event never has the id of another event
        that is alive, so the entry found by ``id(event)`` is that event's; the
        kept tuple holds its event, so the id is not reused while it waits."""
        held, self._held = self._held, []
        batch.held = len(held)
        encoded = batch.encoded
        if encoded and held:
            ids = list(map(id, held))
            tails = map(_TAIL, map(_SLICES, map(encoded.get, ids, repeat(_NO_SLICES))))
            self.bodies.update(zip(ids, zip(held, tails, strict=True), strict=True))
        if batch.rows:
            batch.bodies = self.bodies

    def kept_body(self, event) -> bytes | None:
        """The row body kept for ``event`` (held, not yet compacted), or None."""
        return row_body(event, self.bodies.get(id(event)))

    def forget_bodies(self, keep) -> None:
        """Drop the kept bodies of events ``keep(event)`` says left memory some other
        way than compaction (a feed replayed after a conviction): they would never
        be taken."""
        self.bodies = {k: v for k, v in self.bodies.items() if keep(v[0])}

    # -- reading ---------------------------------------------------------------
    async def read(self, method, *args, **kwargs):
        """Run ``store.method(*args)`` on the reader connection, off the event loop."""
        def call():
            return method(*args, **kwargs)
        return await trio.to_thread.run_sync(call, limiter=self._read_lock)


def _ignore(_) -> None:
    pass


def _nothing() -> None:
    pass


def _small(batch: Batch, most: int) -> bool:
    """Small enough to write on the event loop, without fsync (an ephemeral store)."""
    return batch.snapshot is None and (len(batch.events) + len(batch.blocks) + len(batch.orders)
                                       + len(batch.rows) + len(batch.fills)
                                       + len(batch.accounts)) <= most
