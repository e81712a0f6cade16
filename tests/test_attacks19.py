"""Attacks on the peer-path pass (branch perf-peer23): the door's merge of a push
by ``Replica.merge_blocks``, its clock, below-F and join passes "at C speed",
and ``Engine._rewind`` with an order's undo written out in its loop.

The pass must change nothing but speed: each test here sets the new code
beside the core as it was before the pass (commit 5585500, read from git into
a temporary package ``crdtbook_pre``, the reference engine, or both) and
passes when the two accept, refuse and compute the same thing:

* the fuzzer's simulated cluster (forgers, liars, equivocators, restarts,
  leaves, evictions, compaction, duplicated, dropped and held messages),
  played in lockstep on both cores, with a node's way of merging pushes of
  disjoint origins in one door call added: after every action, every slot's
  book, fills, orders, digest, chains, membership, tips, refusals and the
  door's answers are the same;
* signed feeds drawn by hypothesis (clocks that tie or fall within a block
  and across blocks, events at or below F, joins, leaves and evicts inside a
  run, a non-member's blocks, a bad signature, an altered event, another
  version under a held seq), pushed in random cuts: the same admissions,
  the same refusals (a refused message leaves no trace), the same state;
* the engine's undo: random events in random orders and batches against
  the reference engine and the engine before the pass, after every step;
* and what the pass must not cost: a run of many small blocks (a quiet
  node's feed, one event a block) built in linear time.
"""

from __future__ import annotations

from crdtbook.events import make_order
from crdtbook.feed import Block
from crdtbook.replica import Replica


class _CountedEvents(tuple):
    """A block's events that count the events every concatenation copies."""

    copied = 0

    def __add__(self, other):
        _CountedEvents.copied += len(self) + len(other)
        return _CountedEvents(tuple(self) + tuple(other))


def test_a_run_of_many_single_event_blocks_is_not_copied_once_per_block():
    # A quiet node seals one event a block, so a pull answer (a page of 20,000
    # events) can hold 20,000 blocks of one origin. Growing the origin's run by
    # concatenation copies it once per block: 50,000 blocks took 7.9 s of CPU
    # against 0.11 s for the delta it replaces (the door holds the event loop).
    count = 2_000
    replica = Replica("own")
    replica.place("buy", "1", "1", "limit", "", 1)
    events = [make_order((10 + i) << 16, "peer", i + 1, "sell", "limit", 10**10, 10**8, "")
              for i in range(count)]
    blocks = [Block("peer", e.seq, e.seq, b"", b"", _CountedEvents((e,))) for e in events]
    _CountedEvents.copied = 0
    assert replica.merge_blocks(blocks) == count
    assert replica.event_count() == count + 1
    assert _CountedEvents.copied <= 2 * count  # linear: each event copied a bounded number of times
