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

The heap's size is measured without walking it: the small objects
allocated (``sys.getallocatedblocks``: live and frozen garbage alike, a
count that falls as they are freed; ~1 ms for millions), and the resident
size from /proc/self/statm for the large buffers a cycle may hold, which
that count does not see (a refused push's body was one: tests/test_attacks21.py).
A thaw comes once either has grown to ``GROWTH`` times what the last thaw
left, and by at least ``GROWTH_BLOCKS`` or ``GROWTH_BYTES`` (a small heap is
not thawed every few seconds). ``gc.get_freeze_count()`` counts by walking
the frozen list: 30 ms of CPU for 1.6 million objects laid out in order,
230-270 ms for 2 million on a loaded machine, at every compaction. Before
any growth bound, a stranger connecting as fast as it could grew a node by
0.7 MB/s (cycles of hypercorn's, frozen while their connection was open),
some 400 MB by the thaw.

The freezing is on only in a process that called ``tune()`` (a node, the
benchmarks): a test process making nodes in-process keeps CPython's plain
collector.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

THRESHOLDS = (50_000, 20, 100)
THAW_S = 600.0  # at most this long between full collections of the frozen heap
GROWTH = 2  # and one as soon as the heap is this many times what the last thaw left
GROWTH_BLOCKS = 1_000_000  # ... and at least this many small objects more (~60 MB)
GROWTH_BYTES = 256 * 1024 * 1024  # ... or resident bytes more (buffers held by cycles)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """The process's resident size, or None where /proc does not say."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class _Freezing:
    """Whether compactions freeze the heap; when it was last thawed, and how
    large the heap was then (small objects, resident bytes)."""

    on = False
    thawed_at: float | None = None
    size_at_thaw: tuple[int, int | None] = (0, None)
    clock: Callable[[], float] = staticmethod(time.monotonic)
    size: Callable[[], tuple[int, int | None]] = staticmethod(
        lambda: (sys.getallocatedblocks(), resident_bytes()))


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
        try:
            settle()
        finally:  # never left off, whatever settling met
            if enabled:
                gc.enable()


def settle() -> None:
    """Freeze the heap; first thaw it and collect it all if ``THAW_S`` has passed
    or the heap has grown ``GROWTH``-fold since the last thaw (see above)."""
    now = _Freezing.clock()
    if _Freezing.thawed_at is None:
        _Freezing.thawed_at, _Freezing.size_at_thaw = now, _Freezing.size()
    elif now - _Freezing.thawed_at >= THAW_S or _grown(_Freezing.size()):
        gc.unfreeze()
        gc.collect()
        _Freezing.thawed_at, _Freezing.size_at_thaw = now, _Freezing.size()
    gc.freeze()


def _grown(size: tuple[int, int | None]) -> bool:
    (blocks, resident), (blocks_then, resident_then) = size, _Freezing.size_at_thaw
    if blocks >= GROWTH * blocks_then and blocks - blocks_then >= GROWTH_BLOCKS:
        return True
    return resident is not None and resident_then is not None \
        and resident >= GROWTH * resident_then and resident - resident_then >= GROWTH_BYTES
