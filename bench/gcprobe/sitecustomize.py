"""The garbage collector's work in a node process, logged exactly (a bench-only probe).

bench/cluster.py --gc-log puts this folder on the nodes' PYTHONPATH and sets
CRDTBOOK_GC_LOG to a folder; the interpreter imports this module at start-up
(``site`` imports any ``sitecustomize`` it finds), so a baseline revision's
nodes are measured the same way as this checkout's without a line of their
code changed. Without the variable it does nothing.

A ``gc.callbacks`` hook notes each collection's start and writes one line at
its stop: the monotonic clock at the start (CLOCK_MONOTONIC is system-wide,
so the bench can keep the collections inside its own window), the
generation, the collection's wall and thread CPU time (the collector runs on
whichever thread allocated; ``thread_time_ns`` is that thread's CPU, not the
neighbours'), the objects collected and uncollectable, and the generation
counts at the start (generation 0's count is the net of tracked allocations
since the last collection: the objects a collection of generation 0 scans).
A line is flushed at once: a node is stopped by a signal, and a collection
happens a few times a second at most, so the write is noise beside it.
"""

from __future__ import annotations

import os

_folder = os.environ.get("CRDTBOOK_GC_LOG")
if _folder:
    import gc
    import time

    # open for the process's life: each line is flushed as it is written
    _out = open(os.path.join(_folder, f"gc.{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115
    _started = [0, 0, 0, (0, 0, 0)]

    def _note(phase: str, info: dict) -> None:
        if phase == "start":
            _started[:] = [time.monotonic_ns(), time.perf_counter_ns(), time.thread_time_ns(),
                           gc.get_count()]
            return
        wall = time.perf_counter_ns() - _started[1]
        cpu = time.thread_time_ns() - _started[2]
        count = _started[3]
        _out.write(f"{_started[0]} {info['generation']} {wall} {cpu} {info['collected']} "
                   f"{info['uncollectable']} {count[0]} {count[1]} {count[2]}\n")

    gc.callbacks.append(_note)
