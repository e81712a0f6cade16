"""Deliberate bugs, to show the fuzzer catches them (``python -m fuzz --plant NAME``).

Each plant patches the core for the duration of a ``with`` block only.
"""

from __future__ import annotations

import contextlib

from crdtbook.context import CausalContext
from crdtbook.engine import Engine


@contextlib.contextmanager
def no_rewind():
    """Match on receipt: late events are applied at the end instead of at their position."""
    update = Engine.update

    def append_only(self, events, drop=None):
        for event in sorted(events):
            self.apply(event)

    Engine.update = append_only
    try:
        yield
    finally:
        Engine.update = update


@contextlib.contextmanager
def blind_max_join():
    """The classic context bug: take the max of a cloud instead of contiguous compaction."""
    merge = CausalContext.merge

    def blind(self, other):
        grew = merge(self, other)
        for replica, cloud in list(other.cloud.items()):
            self.vv[replica] = max(self.vv.get(replica, 0), max(cloud))
            self.cloud.pop(replica, None)
        return grew

    add = CausalContext.add

    def blind_add(self, replica, seq):
        add(self, replica, seq)
        if self.cloud.get(replica):
            self.vv[replica] = max(self.cloud.pop(replica))

    CausalContext.merge = blind
    CausalContext.add = blind_add
    try:
        yield
    finally:
        CausalContext.merge, CausalContext.add = merge, add


PLANTS = {"no-rewind": no_rewind, "blind-max-join": blind_max_join}
