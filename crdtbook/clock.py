"""HybridClock: a hybrid logical clock packed into one integer.

Theory of operation
-------------------
A clock value is ``(wall_ms << LOGICAL_BITS) + counter``. Each event this
replica creates is stamped with ``tick(now_ms)``:

    clock = max(last + 1, now_ms << LOGICAL_BITS)

and every clock seen from elsewhere is folded in with ``observe``. So a new
event sorts after everything its creator had seen (causality, as with Lamport
time) and, between concurrent events, roughly by real time (an idle replica's
orders do not jump the queue). If the counter overflows it simply carries
into the millisecond part: the value stays monotone, which is all that
ordering needs.

Rules this module keeps
-----------------------
* The core never reads a clock: the caller passes ``now_ms``.
* ``tick`` is strictly increasing, whatever ``now_ms`` does (it may stall or
  go backwards; the clock does not).
* Values fit in an unsigned 63-bit integer; a remote clock beyond that is
  refused by the codec before it can get here.
"""

from __future__ import annotations

LOGICAL_BITS = 16
MAX_CLOCK = 2**63 - 1


class HybridClock:
    __slots__ = ("last",)

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def tick(self, now_ms: int) -> int:
        """A fresh clock value for a local event."""
        candidate = now_ms << LOGICAL_BITS
        last = self.last + 1
        stamp = candidate if candidate > last else last
        if stamp > MAX_CLOCK:
            raise OverflowError("hybrid clock exhausted the 63-bit range")
        self.last = stamp
        return stamp

    def observe(self, clock: int) -> None:
        """Fold in a clock value seen on a remote event."""
        if clock > self.last:
            self.last = clock

    def peek(self, now_ms: int) -> int:
        """The value ``tick`` would return, without advancing."""
        return max(self.last + 1, now_ms << LOGICAL_BITS)


def wall_ms(clock: int) -> int:
    """The wall-clock millisecond part of a clock value."""
    return clock >> LOGICAL_BITS
