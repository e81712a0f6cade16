"""The collector's policy around compactions (node/gcpolicy.py).

A compaction pauses the collector and then freezes the heap, so collections
scan only what was allocated since; every ``THAW_S``, or once the frozen
heap has grown ``GROWTH``-fold, it unfreezes the heap and collects it all, so
a cycle that became garbage after it was frozen is still freed. Only a
process that called ``tune()`` freezes. The tests turn the policy on, drive
its clock by hand, and restore the interpreter's collector (thresholds,
nothing frozen) after each.
"""

from __future__ import annotations

import gc
import sys
import weakref

import pytest

from node import gcpolicy

from .nodes import start


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def policy(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(gcpolicy._Freezing, "clock", clock)
    monkeypatch.setattr(gcpolicy._Freezing, "thawed_at", None)
    monkeypatch.setattr(gcpolicy._Freezing, "size_at_thaw", (0, None))
    enabled = gc.isenabled()
    previous = gcpolicy.tune()
    try:
        yield clock
    finally:
        gcpolicy._Freezing.on = False
        gc.set_threshold(*previous)
        gc.unfreeze()
        if enabled:
            gc.enable()


class Node:
    """A weakly referable object to build cycles of."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref:
    """A two-object cycle nothing else refers to; a weak reference to one of them."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_compaction_runs_with_the_collector_paused_and_leaves_the_heap_frozen(policy):
    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    with gcpolicy.compaction():
        assert not gc.isenabled()
        made = [[i] for i in range(10_000)]  # tracked, alive past the compaction
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(made)
    assert gc.get_count()[0] < 100  # the young count started again


def test_a_compaction_that_fails_still_restores_the_collector(policy):
    with pytest.raises(RuntimeError), gcpolicy.compaction():
        raise RuntimeError("the compaction failed")
    assert gc.isenabled()
    gc.disable()  # a collector that was off stays off
    with gcpolicy.compaction():
        pass
    assert not gc.isenabled()
    gc.enable()


def test_a_cycle_frozen_by_a_compaction_is_freed_at_the_next_thaw(policy):
    with gcpolicy.compaction():
        pass  # the first compaction starts the thaw's clock
    garbage = cycle()
    with gcpolicy.compaction():
        pass  # frozen while still alive: its cycle is in the permanent generation
    gc.collect()
    assert garbage() is not None, "a frozen cycle is out of every collection's reach"
    policy.now += gcpolicy.THAW_S - 1
    with gcpolicy.compaction():
        pass
    assert garbage() is not None  # not yet: no thaw before THAW_S
    policy.now += 1
    with gcpolicy.compaction():
        pass
    assert garbage() is None  # thawed and collected
    young = cycle()
    gc.collect()
    assert young() is None  # a cycle not yet frozen is collected as ever


def test_a_frozen_heap_grown_past_its_bound_is_thawed_before_thaw_s(policy, monkeypatch):
    monkeypatch.setattr(gcpolicy, "GROWTH", 1.05)
    monkeypatch.setattr(gcpolicy, "GROWTH_BLOCKS", 0)  # no floor: this heap is small
    with gcpolicy.compaction():
        pass  # the first compaction notes the heap it froze
    garbage = cycle()
    with gcpolicy.compaction():
        pass
    gc.collect()
    assert garbage() is not None  # frozen, and the heap has not grown
    grown = [[i] for i in range(sys.getallocatedblocks() // 10)]  # a tenth more, alive
    with gcpolicy.compaction():
        pass
    assert garbage() is None  # thawed and collected, long before THAW_S
    assert gc.get_freeze_count() >= len(grown)  # and frozen again after


def test_without_tune_a_compaction_leaves_the_collector_alone():
    assert not gcpolicy._Freezing.on
    frozen = gc.get_freeze_count()
    with gcpolicy.compaction():
        assert gc.isenabled()
        made = [[i] for i in range(1000)]
    assert gc.get_freeze_count() == frozen
    assert len(made) == 1000


async def test_a_nodes_compaction_freezes_what_it_held(policy, nursery, tmp_path):
    a = await start(nursery, data_dir=str(tmp_path / "a"))
    held = [[i] for i in range(5_000)]  # tracked objects alive across the compaction
    frozen = gc.get_freeze_count()
    a.node.compact()
    assert gc.get_freeze_count() >= frozen + len(held)
    assert gc.isenabled()
