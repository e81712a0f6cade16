"""Garbage-collector policy for long-running crdtbook processes.

A replica allocates a few small, long-lived objects per event and almost no
reference cycles. CPython's default generation-0 threshold (700 allocations)
makes the collector rescan that growing heap again and again, which costs
more than the matching itself. Raising the thresholds keeps collection
working (cycles are still found) at a fraction of the cost. The node and the
benchmarks call ``tune()`` at start-up, so the figures bench/ prints are the
ones a node gets.

Compaction is the other half. Every event a node holds (its ``Order``, its
``Resting`` record, its kept body, its fills) lives until a compaction takes
it out of memory, seconds later: long enough to be scanned by a
generation-0 collection and again by a generation-1 one, though it is never
part of a cycle (bench/cluster.py --gc-log: the collections of generation 0
and 1 free a few dozen objects per thousand orders). A compaction itself
makes some ten objects per event it takes out (final states, fills, rows)
that live until its commit, and used to trigger several collections in a
row that scanned nothing but those. So ``compaction()`` pauses the collector
while a compaction runs and then freezes the heap (``gc.freeze``: every
object tracked so far goes to the permanent generation, which no collection
visits, and the young count starts again from zero): from then on the
collector scans only what was allocated after the last compaction. Frozen
objects are freed by their reference counts as before; only a cycle frozen
before it became garbage (or before a collection found it) would wait, so
the compaction unfreezes the heap and runs one full collection before
freezing it again every ``THAW_S`` (about the rate CPython's own thresholds
ran a full collection under load), and sooner once the frozen heap has grown
to ``GROWTH`` times what the last thaw left: cycles are still collected, at
most ``THAW_S`` later, and what waits frozen never outgrows the live heap
(the thaws' work is then linear in the heap's growth, as CPython's own rule
for full collections keeps it).

The freezing is on only in a process that called ``tune()`` (a node, the
benchmarks): a test process making nodes in-process keeps CPython's plain
collector.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

THRESHOLDS = (50_000, 20, 100)
THAW_S = 600.0  # at most this long between full collections of the frozen heap
GROWTH = 2  # and one as soon as the frozen heap is this many times the last thaw's


class _Freezing:
    """Whether compactions freeze the heap, and when it was last thawed."""

    on = False
    thawed_at: float | None = None
    thawed_left = 0  # objects frozen right after the last thaw
    clock: Callable[[], float] = staticmethod(time.monotonic)


def tune() -> tuple[int, int, int]:
    """Apply the policy; return the previous thresholds."""
    previous = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    _Freezing.on = True
    return previous


@contextmanager
def compaction() -> Iterator[None]:
    """Around a compaction: the collector paused, then the heap frozen (see above)."""
    if not _Freezing.on:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        settle()
        if enabled:
            gc.enable()


def settle() -> None:
    """Freeze the heap; then thaw it and collect it all if ``THAW_S`` has passed or
    the frozen heap has grown ``GROWTH``-fold since the last thaw."""
    now = _Freezing.clock()
    gc.freeze()
    if _Freezing.thawed_at is not None and now - _Freezing.thawed_at < THAW_S \
            and gc.get_freeze_count() <= GROWTH * _Freezing.thawed_left:
        return
    if _Freezing.thawed_at is not None:  # the first call only starts the count
        gc.unfreeze()
        gc.collect()
        gc.freeze()
    _Freezing.thawed_at = now
    _Freezing.thawed_left = gc.get_freeze_count()
