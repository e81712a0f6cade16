"""``node.service.newest_seqs``: each replica's top seq among the events new here.

``Node._journal_fresh`` asks it after every merge (a peer's push: is any of
its events outside every block this node holds?) and every own batch; it
finds the top of each run of one replica at C speed. It must be the plain
per-event pass's answer whatever the order of the events.
"""

from __future__ import annotations

import random

from fuzz.workload import play, random_steps
from node.service import newest_seqs

from .test_bulk_paths import everything


def test_newest_seqs_is_each_replicas_highest_seq_in_any_order():
    """``Node._journal_fresh`` asks each replica's top seq among the events new
    here (runs of one replica at C speed): the same as a pass over every event,
    for runs, interleavings and any shuffle."""
    rng = random.Random(4)
    events = everything(play(4, random_steps(rng, 4, 400), [0, 1, 3, 2])).events()
    by_dot = sorted(events, key=lambda e: (e.replica, e.seq))
    for order in (by_dot, events, rng.sample(events, len(events)), by_dot[::-1], []):
        expected: dict = {}
        for event in order:
            expected[event.replica] = max(expected.get(event.replica, 0), event.seq)
        assert newest_seqs(order) == expected
        assert newest_seqs(iter(order)) == expected
