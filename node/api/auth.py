"""Who a client request acts for, what it may do, and how fast.

Theory of operation
-------------------
A client shows a bearer token: ``Authorization: Bearer TOKEN`` over HTTP,
a ``token`` field in a Grenache PeerRPC payload. ``principal`` turns it into
a ``Principal``:

* an account's token (node/store/accounts.py): acts for that account only;
* the node's admin token (node/store/admintoken.py): acts for any account;
* with authentication off (``--no-auth`` on loopback, ``--insecure-no-auth``
  anywhere): everyone acts for any account, as before accounts existed.

A missing, malformed, unknown or revoked token is ``Unauthorized`` (401,
``{"error": "unauthorized", ...}``). Then:

* an order's account is the principal's: an order that names another
  account in its ``account`` field is ``Forbidden`` (403); one that names
  none (or "") gets the principal's (the admin's: none);
* only the order's account (or the admin) cancels it (403 otherwise);
* ``/orders?account=A`` and ``/fills?account=A`` read A's own history: A's
  token or the admin's.

Market data (``/book``, ``/fills`` without ``account``, ``/events``,
``/status``) stays public, as on every exchange.

Rate limits: a token bucket per account (``RateLimiter``): ``rate`` orders
(and cancels) per second, up to ``burst`` at once; a request that would
overdraw it is ``RateLimited`` (429 with ``Retry-After``) and changes
nothing. Every check here runs before any state changes.

Protected mode (as Redis has): a node with authentication off refuses to
listen on anything but loopback, unless told ``--insecure-no-auth``.

Tokens are never logged or echoed; digests are compared in constant time.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from collections.abc import Callable
from operator import attrgetter
from typing import NamedTuple

from ..asgi import BadRequest
from ..store import admintoken
from .requests import OrderRequest

MAX_BUCKETS = 100_000  # past this, full buckets are dropped (a full bucket = no bucket)


class Principal(NamedTuple):
    account: str | None  # None: acts for any account (the admin, or no authentication)

    @property
    def any_account(self) -> bool:
        return self.account is None


ANYONE = Principal(None)


class Denied(BadRequest):
    """A 401, 403 or 429, with the headers that go with it."""


def unauthorized(detail: str) -> Denied:
    return Denied(401, "unauthorized", detail,
                  [(b"www-authenticate", b'Bearer realm="crdtbook"')])


def forbidden(detail: str) -> Denied:
    return Denied(403, "forbidden", detail)


def bearer(headers: dict[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None if there is none;
    Unauthorized if the header is there but is not a bearer token."""
    given = headers.get("authorization")
    if given is None:
        return None
    scheme, _, token = given.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("expected 'Authorization: Bearer <token>'")
    return token.strip()


def principal(node, token: object) -> Principal:
    """Who ``token`` (None: none was shown) acts for; Unauthorized if nobody."""
    if not node.auth:
        return ANYONE
    if token is None:
        raise unauthorized("this needs an account's token: send 'Authorization: Bearer "
                           "<token>' (`crdtbook account add NAME` on the node's machine makes "
                           "one; the CLI there uses the default account's, DIR/account-token)")
    if not isinstance(token, str) or not token.isascii() or len(token) > 512:
        raise unauthorized("the token is not a token")
    if admintoken.matches(node.admin_digest, token):
        return ANYONE
    name = node.accounts.authenticate(token)
    if name is None:  # never echo what was sent: it may be a near-miss secret
        raise unauthorized("unknown or revoked token")
    return Principal(name)


def order_account(who: Principal, named: str) -> str:
    """The account an order placed by ``who`` that names ``named`` ("": none) gets."""
    if who.any_account or named in ("", who.account):
        return named or (who.account or "")
    raise forbidden(f"this token is account {who.account!r}'s; it cannot act for account "
                    f"{named[:64]!r}")


def may_read(who: Principal, account: str | None) -> None:
    """Forbidden unless ``who`` may read the history of ``account`` (None: everyone's)."""
    if account is not None and not who.any_account and account != who.account:
        raise forbidden(f"this token is account {who.account!r}'s; it cannot read account "
                        f"{account[:64]!r}")


def may_cancel(who: Principal, account: str, order: str) -> None:
    if not who.any_account and account != who.account:
        raise forbidden(f"order {order} belongs to another account; only its account (or "
                        "the node's admin) can cancel it")


def entitled(node, who: Principal, orders: list) -> list:
    """``orders`` (OrderRequests) with the account each gets (403 if one names an
    account ``who`` may not act for), once the rate limit let them all through
    (429 otherwise)."""
    # built without _replace's frames: it and a Python loop counting accounts
    # cost a fifth as much as placing the batch (bench: callgrind, per order)
    orders = [o if (account := order_account(who, o.account)) is o.account
              else _new(OrderRequest, (o.side, o.qty, o.price, o.type, account))
              for o in orders]
    node.limiter.take(Counter(map(_account, orders)))
    return orders


_new = tuple.__new__
_account = attrgetter("account")


class RateLimiter:
    """Token buckets by account: ``rate`` per second, ``burst`` at most; rate 0: none.

    ``clock`` is monotonic seconds (injectable for tests)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # account -> (tokens, at)

    def _level(self, account: str, now: float) -> float:
        tokens, at = self.buckets.get(account, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def take(self, costs: dict[str, int]) -> None:
        """Take ``costs`` (orders by account) from the buckets, all or nothing;
        RateLimited (429, Retry-After) or, for more than a burst at once, 413."""
        if not self.rate:
            return
        now = self.clock()
        levels = {}
        wait = 0.0
        for account, cost in costs.items():
            if cost > self.burst:
                raise BadRequest(413, "batch_too_large",
                                 f"{cost} orders at once exceed this node's rate burst "
                                 f"({self.burst}); send smaller batches")
            level = self._level(account, now)
            levels[account] = level
            if level < cost:
                wait = max(wait, (cost - level) / self.rate)
        if wait:
            seconds = max(1, math.ceil(wait))
            raise Denied(429, "rate_limited",
                         f"over this node's rate limit ({self.rate:g} orders/s, burst "
                         f"{self.burst}); retry after {seconds}s",
                         [(b"retry-after", str(seconds).encode())])
        if len(self.buckets) >= MAX_BUCKETS:
            self.buckets = {a: (t, at) for a, (t, at) in self.buckets.items()
                            if min(self.burst, t + (now - at) * self.rate) < self.burst}
        for account, cost in costs.items():
            self.buckets[account] = (levels[account] - cost, now)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def protected_mode(config) -> str | None:
    """Why a node with ``config`` must not start (one line), or None."""
    if config.auth or config.insecure_no_auth:
        return None
    exposed = [h for h in (config.host, config.rpc_host) if h is not None and not loopback(h)]
    if not exposed:
        return None
    return (f"refusing to listen on {exposed[0]} with authentication off (protected mode): "
            "anyone who reaches it could trade as anyone; drop --no-auth, listen on "
            "127.0.0.1, or pass --insecure-no-auth if you mean it")
