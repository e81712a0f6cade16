"""Token buckets: at most ``rate`` requests a second per key, in bursts of ``burst``.

Theory of operation
-------------------
Each key (a member's replica id, or a caller's address) has a bucket of
``burst`` tokens that refills at ``rate`` tokens a second; a request takes
one token, and a request that finds the bucket empty is refused (the caller
backs off and asks again later). Time is passed in (``now``, monotonic
seconds), so the buckets are testable without waiting.

Rules this module keeps
-----------------------
* Memory is bounded: at most ``max_keys`` buckets; beyond that the bucket
  left untouched longest is dropped (a full bucket, which is what a
  forgotten key would have refilled to anyway).
* Never raises on a key or a time it has not seen.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimit:
    def __init__(self, rate: float, burst: float, max_keys: int = 4_096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def allow(self, key: str, now: float) -> bool:
        """Take a token for ``key``; False if it has none left."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
