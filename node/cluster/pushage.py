"""Push age: how old a push's oldest event is at each step of its way, for rewinds.

Theory of operation
-------------------
A peer's push makes the receiver rewind to its oldest event: every event the
receiver applied with a later stamp is undone and replayed. So the figure that
drives ``applies_per_event`` is the age of that oldest event (wall-clock now
minus the wall part of its hybrid stamp) when the receiver merges it. Each
node observes it, per push, at four steps (``crdtbook_push_age_seconds`` by
``step`` in GET /metrics; bench/cluster.py prints mean and p90 of each):

* ``sealed``: at its origin, once the commit that sealed it is durable;
* ``sent``: at its origin, when the push carrying it goes out (the wait
  between the two is for the push in flight to that peer);
* ``received``: at the receiver, when the push's body has been read;
* ``merged``: at the receiver, once the push is merged (its rewind done).

The steps are taken with each node's wall clock: on one machine (the bench)
they subtract; across machines the receiver's steps carry the clocks' skew.
One observation per push and step, never per event; a negative age (a clock
stepped back) counts as 0.
"""

from __future__ import annotations

from crdtbook.clock import LOGICAL_BITS


def oldest_ms(blocks) -> int | None:
    """The wall-clock ms of the oldest stamp in ``blocks`` (each block's events are
    in seq order, so its first is its oldest); None if there is no event."""
    oldest = None
    for block in blocks:
        if block.events:
            stamp = block.events[0].clock
            if oldest is None or stamp < oldest:
                oldest = stamp
    return None if oldest is None else oldest >> LOGICAL_BITS


def observe(node, step: str, stamp_ms: int | None, now_ms: int | None = None) -> None:
    """One push's oldest event, ``stamp_ms``, seen at ``step`` (now, or ``now_ms``)."""
    if stamp_ms is None:
        return
    now = node.clock_ms() if now_ms is None else now_ms
    node.metrics.push_age.labels(step).observe(max(0, now - stamp_ms) / 1000)
