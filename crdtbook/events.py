"""Events: the members of the replicated set, ordered by position.

Theory of operation
-------------------
There are two kinds of event, both immutable tuples whose first three fields
are the event's *position* ``(clock, replica, seq)``. Because the position
comes first, plain tuple comparison sorts events in the total order every
replica uses for matching, and sorting or bisecting a list of events runs at
C speed. ``(replica, seq)`` is the event's ``Dot``; no two events share one,
so comparisons never look past the position (a forged duplicate dot is the
one exception, and the set keeps the smaller tuple: see aworset.py).

* ``Order``: side, type, price and quantity in 1e-8 units (price 0 for a
  market order, which has none), and an account label ("" if none).
* ``Cancel``: the dot of the order it cancels. It takes effect at its own
  position: fills before it stand, the remainder after it is removed.

Validation is split in two:

* *structural* (``check_order`` / ``check_cancel``): types, ranges, a price
  iff not market. A message failing these is refused whole by the codec and
  never enters the set;
* *semantic* (in the engine, see ``Reason``): a well-formed event that breaks
  a rule of the exchange (a cancel of another replica's order, a clock that
  does not increase along its replica's seq, ...). Such an event stays in the
  set and is marked rejected, identically on every replica, at its position.
"""

from __future__ import annotations

from typing import NamedTuple

from .amount import check_units
from .clock import MAX_CLOCK
from .dot import MAX_SEQ, Dot, check_replica, check_seq, show_int
from .keys import KEY_BYTES

ORDER = "order"
CANCEL = "cancel"
MEMBER = "member"

JOIN = "join"
LEAVE = "leave"
EVICT = "evict"
MEMBER_ACTIONS = (JOIN, LEAVE, EVICT)

BUY = "buy"
SELL = "sell"
SIDES = (BUY, SELL)

LIMIT = "limit"
MARKET = "market"
IOC = "ioc"
FOK = "fok"
POST_ONLY = "post_only"
TYPES = (LIMIT, MARKET, IOC, FOK, POST_ONLY)

MAX_ACCOUNT_LEN = 64


class EventError(ValueError):
    """A structurally invalid event (wrong type, out of range, missing price)."""


class Order(NamedTuple):
    clock: int
    replica: str
    seq: int
    kind: str  # always ORDER
    side: str
    type: str
    price: int  # 1e-8 units; 0 for market orders
    qty: int  # 1e-8 units
    account: str


class Cancel(NamedTuple):
    clock: int
    replica: str
    seq: int
    kind: str  # always CANCEL
    target_replica: str
    target_seq: int

    @property
    def target(self) -> Dot:
        return Dot(self.target_replica, self.target_seq)


class Member(NamedTuple):
    """A membership change: who counts for the final frontier.

    * join: ``replica`` (a member) admits ``target``; the target's events all
      sort after it, so no frontier computed before it can have passed them.
      ``key`` is the target's public key (its id is derived from it, see
      keys.py): what every receiver checks the target's signatures with.
    * leave: ``replica`` leaves (``target`` is itself); its events after
      ``last_seq`` (this event's own seq) are rejected.
    * evict: ``replica`` evicts ``target``; the target's events after
      ``last_seq`` are rejected, identically on every replica.
    """

    clock: int
    replica: str
    seq: int
    kind: str  # always MEMBER
    action: str
    target: str
    last_seq: int  # 0 for join
    key: bytes = b""  # join: the target's Ed25519 public key; b"" otherwise


Event = Order | Cancel | Member


def _dot(event) -> Dot:
    return Dot(event.replica, event.seq)


def _position(event) -> tuple[int, str, int]:
    return (event.clock, event.replica, event.seq)


for _kind in (Order, Cancel, Member):  # every event: its identity and its place in the order
    _kind.dot = property(_dot)
    _kind.position = property(_position)


def check_clock(clock: object) -> int:
    if isinstance(clock, bool) or not isinstance(clock, int):
        raise EventError(f"clock must be an integer, got {type(clock).__name__}")
    if not 0 < clock <= MAX_CLOCK:
        raise EventError(f"clock {show_int(clock)} is out of range 1..2^63-1")
    return clock


def check_account(account: object) -> str:
    if not isinstance(account, str):
        raise EventError(f"account must be a string, got {type(account).__name__}")
    if len(account) > MAX_ACCOUNT_LEN or not account.isprintable():
        raise EventError(f"account must be at most {MAX_ACCOUNT_LEN} printable characters")
    return account


def make_order(
    clock: int, replica: str, seq: int, side: str, type: str, price: int, qty: int, account: str
) -> Order:
    """Build an Order, checking every field; raise EventError (or a subclass of ValueError)."""
    check_clock(clock)
    check_replica(replica)
    check_seq(seq)
    if side not in SIDES:
        raise EventError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    if type not in TYPES:
        raise EventError(f"type must be one of {', '.join(TYPES)}, got {type!r}")
    if type == MARKET:
        if isinstance(price, bool) or not isinstance(price, int) or price != 0:
            raise EventError("a market order has no price (price must be the integer 0)")
    else:
        check_units(price, "price")
    check_units(qty, "quantity")
    check_account(account)
    # Intern the enumerations: every event shares the module's constants.
    side = BUY if side == BUY else SELL
    type = TYPES[TYPES.index(type)]
    return Order(clock, replica, seq, ORDER, side, type, price, qty, account)


def make_member(clock: int, replica: str, seq: int, action: str, target: str,
                last_seq: int, key: bytes = b"") -> Member:
    check_clock(clock)
    check_replica(replica)
    check_seq(seq)
    if action not in MEMBER_ACTIONS:
        raise EventError(f"membership action must be one of {', '.join(MEMBER_ACTIONS)}")
    check_replica(target)
    if isinstance(last_seq, bool) or not isinstance(last_seq, int):
        raise EventError("last seq must be an integer")
    if action == JOIN and last_seq != 0:
        raise EventError("a join carries last seq 0")
    if not 0 <= last_seq <= MAX_SEQ:
        raise EventError(f"last seq {show_int(last_seq)} is out of range 0..2^63-1")
    if not isinstance(key, bytes) or len(key) not in (0, KEY_BYTES) or (key and action != JOIN):
        raise EventError(f"a join carries a {KEY_BYTES}-byte public key (or none); "
                         "a leave or evict carries none")
    return Member(clock, replica, seq, MEMBER, MEMBER_ACTIONS[MEMBER_ACTIONS.index(action)],
                  target, last_seq, key)


def make_cancel(clock: int, replica: str, seq: int, target_replica: str, target_seq: int) -> Cancel:
    check_clock(clock)
    check_replica(replica)
    check_seq(seq)
    check_replica(target_replica)
    check_seq(target_seq, "target seq")
    return Cancel(clock, replica, seq, CANCEL, target_replica, target_seq)
