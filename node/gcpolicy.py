"""Garbage-collector policy for long-running crdtbook processes.

A replica allocates a few small, long-lived objects per event and almost no
reference cycles. CPython's default generation-0 threshold (700 allocations)
makes the collector rescan that growing heap again and again, which costs
more than the matching itself. Raising the thresholds keeps collection
working (cycles are still found) at a fraction of the cost. The node and the
benchmarks call ``tune()`` at start-up, so the figures bench/ prints are the
ones a node gets.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def tune() -> tuple[int, int, int]:
    """Apply the policy; return the previous thresholds."""
    previous = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    return previous
