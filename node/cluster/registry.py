"""Registry: a Grenache-grape-compatible announce/lookup table.

Theory of operation
-------------------
Services announce ``[key, port]``; the registry records ``host:port`` (the
host being the address the announcement came from) with an expiry of
``ttl_s`` from now; ``lookup(key)`` returns the live addresses. This is the
HTTP API of Grenache's grape (``POST /announce`` with ``{"data": [key,
port]}``, ``POST /lookup`` with ``{"data": key}``), including its error
shapes: a failed call answers HTTP 200 with a JSON *string* such as
``"ERR_GRAPE_LOOKUP"`` (as a real grape does).

Time is passed in (``now``, seconds, monotonic), so the table is testable
without waiting.
"""

from __future__ import annotations

import json
import random

DEFAULT_TTL_S = 60.0
MAX_KEY_LEN = 256
MAX_ENTRIES = 10_000
MAX_RESULTS = 100


class Registry:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, dict[str, float]] = {}

    def announce(self, key: str, address: str, now: float) -> None:
        addresses = self._entries.setdefault(key, {})
        if address not in addresses and self.size() >= MAX_ENTRIES:
            self.expire(now)
            if self.size() >= MAX_ENTRIES:
                raise OverflowError("registry is full")
        addresses[address] = now + self.ttl_s

    def lookup(self, key: str, now: float, rng: random.Random | None = None) -> list[str]:
        """Live addresses; beyond MAX_RESULTS a random subset, as a grape answers
        (a fixed subset would let a flood of bogus announcements hide real ones)."""
        addresses = self._entries.get(key, {})
        live = sorted(a for a, expires in addresses.items() if expires > now)
        if len(live) > MAX_RESULTS:
            live = sorted((rng or random).sample(live, MAX_RESULTS))
        return live

    def expire(self, now: float) -> None:
        for key in sorted(self._entries):
            live = {a: t for a, t in self._entries[key].items() if t > now}
            if live:
                self._entries[key] = live
            else:
                del self._entries[key]

    def size(self) -> int:
        return sum(len(a) for a in self._entries.values())


def handle(registry: Registry, path: str, body: bytes, client_host: str, now: float) -> bytes:
    """Answer a grape API call; always a JSON body (errors are JSON strings)."""
    try:
        message = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        message = None
    data = message.get("data") if isinstance(message, dict) else None
    if path == "/announce":
        if not isinstance(data, list) or len(data) != 2:
            return _err("ERR_GRAPE_ANNOUNCE")
        key, port = data
        if not _valid_key(key):
            return _err("ERR_GRAPE_ANNOUNCE")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            return _err("ERR_GRAPE_SERVICE_PORT")
        host = f"[{client_host}]" if ":" in client_host else client_host  # IPv6
        try:
            registry.announce(key, f"{host}:{port}", now)
        except OverflowError:
            return _err("ERR_GRAPE_ANNOUNCE")
        return b"1"
    if path == "/lookup":
        if not _valid_key(data):
            return _err("ERR_GRAPE_LOOKUP")
        return json.dumps(registry.lookup(data, now)).encode()
    return _err("ERR_REQ_NOTFOUND")


def _valid_key(key: object) -> bool:
    return isinstance(key, str) and 0 < len(key) <= MAX_KEY_LEN


def _err(code: str) -> bytes:
    return json.dumps(code).encode()
