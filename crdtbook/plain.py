"""Plain events: orders and cancels built straight from the scan's matches.

Theory of operation
-------------------
cborscan.py proves a long array's entries are plain orders and cancels by
matching each against a compiled pattern of their exact encoding, whose
groups hold every field's bytes: the id's 32 bytes, each integer with its
head, the account with its head. Decoding those entries again with cbor2
and checking each field's type in Python (codec.events_from_wire) costs more
than the scan itself, so ``events_from_matches`` reads the fields off the
matches instead: an integer is its bytes read big-endian less its head
(fixed by its width), a string is decoded once per distinct value.

Rules this module keeps
-----------------------
* The same events as codec.events_from_wire, or nothing: every range and
  string rule of its fast loop is checked here, and at the first entry that
  fails any (or whose text is not UTF-8) this returns None, so the caller
  takes the careful way, which builds the same events or refuses with the
  same words. Nothing here raises on bad input.
* Strings are shared as events_from_wire shares them: one object per
  distinct replica id, one per distinct account, per message.
* Pure: no I/O; types proven by the pattern, values checked here.
"""

from __future__ import annotations

from .amount import MAX_UNITS
from .clock import MAX_CLOCK
from .dot import MAX_SEQ, DotError, check_replica
from .events import CANCEL, MAX_ACCOUNT_LEN, ORDER, SIDES, TYPES, Cancel, Order

# An integer's bytes read whole, less this, by its width: its head's share
# (the head of a width is fixed: 0x18 one byte follows, 0x19 two, 0x1a four, 0x1b eight).
_HEAD = tuple({2: 0x18 << 8, 3: 0x19 << 16, 5: 0x1A << 32, 9: 0x1B << 64}.get(n, 0)
              for n in range(10))
_new = tuple.__new__


def events_from_matches(matches: list) -> list[Order | Cancel] | None:
    """The events of the scan's matches (cborscan.scan ``runs_out``), in order,
    or None if any is not plainly valid (the caller then decodes the careful way)."""
    head = _HEAD
    out: list = []
    append = out.append
    replicas: dict[bytes, str] = {}
    accounts: dict[bytes, str] = {}
    try:
        for match in matches:
            (o, replica, seq, clock, side, kind, price, qty, account,
             c, c_replica, c_seq, c_clock, target, target_seq) = match.groups()
            if o is not None:
                seq = int.from_bytes(seq) - head[len(seq)]
                clock = int.from_bytes(clock) - head[len(clock)]
                price = int.from_bytes(price) - head[len(price)]
                qty = int.from_bytes(qty) - head[len(qty)]
                side, kind = side[0], kind[0]
                name = replicas.get(replica) or _replica(replicas, replica)
                label = accounts.get(account) or _account(accounts, account)
                if (
                    0 < seq <= MAX_SEQ and 0 < clock <= MAX_CLOCK
                    and side < 2 and kind < 5 and 0 < qty <= MAX_UNITS
                    and ((0 < price <= MAX_UNITS) if kind != 1 else price == 0)
                    and name is not None and label is not None
                ):
                    append(_new(Order, (clock, name, seq, ORDER, SIDES[side], TYPES[kind],
                                        price, qty, label)))
                    continue
                return None
            seq = int.from_bytes(c_seq) - head[len(c_seq)]
            clock = int.from_bytes(c_clock) - head[len(c_clock)]
            target_seq = int.from_bytes(target_seq) - head[len(target_seq)]
            name = replicas.get(c_replica) or _replica(replicas, c_replica)
            target = replicas.get(target) or _replica(replicas, target)
            if (
                0 < seq <= MAX_SEQ and 0 < clock <= MAX_CLOCK and 0 < target_seq <= MAX_SEQ
                and name is not None and target is not None
            ):
                append(_new(Cancel, (clock, name, seq, CANCEL, target, target_seq)))
                continue
            return None
    except UnicodeDecodeError:  # cbor2 refuses it too: the careful way says so
        return None
    return out


def _replica(known: dict[bytes, str], raw: bytes) -> str | None:
    name = raw.decode()
    try:
        check_replica(name)
    except DotError:
        return None
    known[raw] = name
    return name


def _account(known: dict[bytes, str], raw: bytes) -> str | None:
    name = raw[1:].decode()  # past its head (a text string of 0..23 bytes)
    if len(name) > MAX_ACCOUNT_LEN or not name.isprintable():
        return None
    known[raw] = name
    return name
