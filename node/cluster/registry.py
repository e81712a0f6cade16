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

Bounds, so that a flood of announcements cannot keep real services out:
at most ``MAX_PER_SOURCE`` live entries come from one source host, at most
``MAX_PER_KEY`` addresses are kept for one key, ``MAX_ENTRIES`` in all.
When a bound is reached, expired entries go first; then, for the source
bound, that source's own entry nearest to expiry (a flood only churns its
own entries); for the key and table bounds, an entry never renewed first
(a live service announces again every few seconds, a flood from many
addresses once), and among those (or, if all were renewed, among all) the
one nearest to expiry of the source holding the most (so a host that floods
loses its entries before one that announces a few). A renewal of an address
already held is never refused.
"""

from __future__ import annotations

import json
import random

DEFAULT_TTL_S = 60.0
MAX_KEY_LEN = 256
MAX_ENTRIES = 10_000
MAX_PER_KEY = 1_000
MAX_PER_SOURCE = 256
MAX_RESULTS = 100


class Registry:
    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, dict[str, float]] = {}  # key -> address -> expiry
        self._sources: dict[str, dict[tuple[str, str], float]] = {}  # host -> (key, address)
        self._owner: dict[tuple[str, str], str] = {}  # (key, address) -> host
        self._renewed: set[tuple[str, str]] = set()  # entries announced more than once
        self._size = 0
        self._expired_at = float("-inf")

    def announce(self, key: str, address: str, now: float, source: str | None = None) -> None:
        """Record ``address`` for ``key`` until ``now + ttl_s``; ``source`` is the host the
        announcement came from (by default, the address's host)."""
        source = source if source is not None else address.rsplit(":", 1)[0]
        addresses = self._entries.get(key, {})
        if address not in addresses:
            if now >= self._expired_at + 1.0 and (
                    len(self._sources.get(source, ())) >= MAX_PER_SOURCE
                    or len(addresses) >= MAX_PER_KEY or self._size >= MAX_ENTRIES):
                self.expire(now)  # at most once a second: a full scan
            own = self._sources.get(source, {})
            if len(own) >= MAX_PER_SOURCE:  # a flood churns only its own entries
                self._drop(min(own, key=own.__getitem__))
            addresses = self._entries.get(key, {})
            if len(addresses) >= MAX_PER_KEY and self._drop_fresh(
                    [(key, held) for held in addresses]):
                pass  # a never-renewed entry of the key gave way
            elif len(addresses) >= MAX_PER_KEY:  # the key's largest source gives one up
                by_host: dict[str, list[tuple[str, str]]] = {}
                for held in addresses:
                    by_host.setdefault(self._owner[(key, held)], []).append((key, held))
                host = max(sorted(by_host), key=lambda h: len(by_host[h]))
                self._drop(min(by_host[host], key=self._sources[host].__getitem__))
            if self._size >= MAX_ENTRIES and self._drop_fresh(list(self._owner)):
                pass
            elif self._size >= MAX_ENTRIES:  # the table's largest source gives one up
                host = max(sorted(self._sources), key=lambda h: len(self._sources[h]))
                own = self._sources[host]
                self._drop(min(own, key=own.__getitem__))
            self._size += 1
        else:
            self._unlink((key, address))  # a renewal: it may come from another host now
            self._renewed.add((key, address))
        expires = now + self.ttl_s
        self._entries.setdefault(key, {})[address] = expires
        self._sources.setdefault(source, {})[(key, address)] = expires
        self._owner[(key, address)] = source

    def _unlink(self, entry: tuple[str, str]) -> None:
        host = self._owner.pop(entry)
        held = self._sources[host]
        del held[entry]
        if not held:
            del self._sources[host]

    def _drop_fresh(self, entries: list[tuple[str, str]]) -> bool:
        """Drop one of ``entries`` never renewed: of the source holding the most of
        them (of equal ones, the newest to arrive: an entry that was there before a
        flood stays), its oldest. False if all were renewed."""
        by_host: dict[str, list[tuple[str, str]]] = {}
        for entry in entries:
            if entry not in self._renewed:
                by_host.setdefault(self._owner[entry], []).append(entry)
        if not by_host:
            return False
        host = max(sorted(by_host), key=lambda h: (
            len(by_host[h]), max(self._sources[h][e] for e in by_host[h])))
        self._drop(min(by_host[host], key=lambda e: (self._sources[host][e], e)))
        return True

    def _drop(self, entry: tuple[str, str]) -> None:
        self._renewed.discard(entry)
        self._unlink(entry)
        key, address = entry
        addresses = self._entries[key]
        del addresses[address]
        if not addresses:
            del self._entries[key]
        self._size -= 1

    def lookup(self, key: str, now: float, rng: random.Random | None = None) -> list[str]:
        """Live addresses; beyond MAX_RESULTS a random subset, as a grape answers
        (a fixed subset would let a flood of bogus announcements hide real ones)."""
        addresses = self._entries.get(key, {})
        live = sorted(a for a, expires in addresses.items() if expires > now)
        if len(live) > MAX_RESULTS:
            live = sorted((rng or random).sample(live, MAX_RESULTS))
        return live

    def expire(self, now: float) -> None:
        self._expired_at = now
        for entry, host in sorted(self._owner.items()):
            if self._sources[host][entry] <= now:
                self._drop(entry)

    def size(self) -> int:
        return self._size


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
            registry.announce(key, f"{host}:{port}", now, source=client_host)
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
