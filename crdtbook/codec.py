"""Codec: canonical CBOR for events, deltas and causal contexts.

Theory of operation
-------------------
Every message is a CBOR map ``{"v": 1, "kind": ..., ...}`` encoded
canonically (RFC 8949 core deterministic encoding via cbor2's
``canonical=True``), so equal values give equal bytes in every process.

    event    [0, replica, seq, clock, side, type, price, qty, account]   order
             [1, replica, seq, clock, target_replica, target_seq]       cancel
             [2, replica, seq, clock, action, target, last_seq, key]    member (join/leave/evict)
    claims   [[replica, seq, clock], ...]  sorted by replica (see membership.py, finality)
    context  [[replica, contiguous_seq, [cloud seq, ...]], ...]  sorted by replica
    delta    {"v": 1, "kind": "delta", "events": [event...], "context": context,
              "claims": claims}          (claims optional, also on context messages)

``side`` and ``type`` are small integers (indexes into ``SIDES``/``TYPES``);
prices and quantities are integers of 1e-8 units (price 0 for market).

Decoding is strict and total: anything but exactly one well-formed message
(truncated or trailing bytes, wrong types, booleans or floats where integers
belong, NaN, negatives, out-of-range integers, tags, unknown versions or kinds,
oversize collections, duplicate dots, events not covered by their delta's
context) raises ``CodecError`` with a message naming the field. Nothing is
returned half-built, so a failed decode can never change a replica.

Untrusted bytes go through ``loads``: cborscan.py walks the item headers
first (at most ``cborscan.MAX_ITEMS`` items, ``MAX_DEPTH`` levels, no tags
but a 9-byte positive bignum, for amounts past 2^64 units; no indefinite
lengths) and cbor2 builds objects only from a message that
passes, so tags are refused before anything is decoded and a message of
millions of empty arrays costs nothing. Only this node's own snapshots are
decoded unscanned (``trusted``: they hold integers beyond 64 bits). Values
quoted back in an error are cut (``dot.shown``).

A delta's events are the hot loop (``events_from_wire``). When the scan
proves the message's one long array (``cborscan.scan_proving``: every entry
an order or a cancel in its pattern's exact shape, so every field's type),
``_proven_events`` builds it by the same range, id and account rules without
the type tests; anything else takes the usual loop. It also notes whether the
array is a replay's proof (events in position order, each origin's seqs 1..n
in that order): the delta is then an ``aworset.InOrderDelta``, which a replay
into a new replica takes without checking or sorting those events again.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from .amount import MAX_UNITS
from .aworset import AWORSet, InOrderDelta
from .cborscan import ScanError, scan, scan_proving
from .clock import MAX_CLOCK
from .context import CausalContext
from .dot import MAX_SEQ, DotError, check_replica, show_int, shown
from .engine import CANCEL_REASONS
from .events import (
    CANCEL,
    MARKET,
    MAX_ACCOUNT_LEN,
    MEMBER_ACTIONS,
    ORDER,
    SIDES,
    TYPES,
    Cancel,
    Member,
    Order,
    make_cancel,
    make_member,
    make_order,
)
from .keys import owns
from .snapshot import Claim, Snapshot

VERSION = 1
MAX_EVENTS = 1_000_000
MAX_REPLICAS = 10_000
MAX_CLOUD = 1_000_000
MAX_BYTES = 256 * 1024 * 1024

_ORDER_TAG = 0
_CANCEL_TAG = 1
_MEMBER_TAG = 2


class CodecError(ValueError):
    """Bytes that are not a valid crdtbook message; the message says why."""


# -- encoding -------------------------------------------------------------
def event_to_wire(event: Order | Cancel | Member) -> list:
    if event.kind == ORDER:
        return [
            _ORDER_TAG, event.replica, event.seq, event.clock,
            SIDES.index(event.side), TYPES.index(event.type),
            event.price, event.qty, event.account,
        ]
    if event.kind == CANCEL:
        return [_CANCEL_TAG, event.replica, event.seq, event.clock,
                event.target_replica, event.target_seq]
    return [_MEMBER_TAG, event.replica, event.seq, event.clock,
            MEMBER_ACTIONS.index(event.action), event.target, event.last_seq, event.key]


def claims_to_wire(claims) -> list:
    return [[c.replica, c.seq, c.clock] for c in sorted(claims)]


def context_to_wire(context: CausalContext) -> list:
    return [
        [r, context.contiguous(r), sorted(context.cloud.get(r, ()))]
        for r in context.replicas()
    ]


def _dumps(message: dict) -> bytes:
    return cbor2.dumps(message, canonical=True)


def encode_event(event: Order | Cancel) -> bytes:
    return _dumps({"v": VERSION, "kind": "event", "event": event_to_wire(event)})


def encode_context(context: CausalContext, claims=()) -> bytes:
    message = {"v": VERSION, "kind": "context", "context": context_to_wire(context)}
    if claims:
        message["claims"] = claims_to_wire(claims)
    return _dumps(message)


def encode_delta(delta: AWORSet, claims=()) -> bytes:
    events = sorted(value for _, _, value in delta.entries())
    message = {
        "v": VERSION,
        "kind": "delta",
        "events": [event_to_wire(e) for e in events],
        "context": context_to_wire(delta.context),
    }
    if claims:
        message["claims"] = claims_to_wire(claims)
    return _dumps(message)


# -- decoding -------------------------------------------------------------
def _loads(data: object, kind: str, trusted: bool = False) -> dict:
    return _loads_proving(data, kind, trusted)[0]


def _loads_proving(data: object, kind: str, trusted: bool = False) -> tuple[dict, bool]:
    """``_loads``, and whether the scan proved the message's one long array (see
    ``cborscan.scan_proving``; never for trusted bytes, which are not scanned)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"{kind}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_BYTES:
        raise CodecError(f"{kind}: message of {len(data)} bytes exceeds {MAX_BYTES}")
    if not data:
        raise CodecError(f"{kind}: empty message")
    proven = False
    if not trusted:
        try:
            proven = scan_proving(data)  # also refuses trailing bytes
        except ScanError as exc:
            raise CodecError(f"{kind}: refused CBOR ({exc})") from None
    message = loads(data, kind, trusted=True)  # scanned just above (or trusted)
    if not isinstance(message, dict):
        raise CodecError(f"{kind}: message must be a map, got {_name(message)}")
    version = message.get("v")
    if type(version) is not int or version != VERSION:
        raise CodecError(f"{kind}: unsupported version {shown(version)} "
                         f"(this node speaks {VERSION})")
    if message.get("kind") != kind:
        raise CodecError(f"expected a {kind} message, got kind {shown(message.get('kind'))}")
    return message, proven


def loads(data: bytes | bytearray | memoryview, what: str, trusted: bool = False) -> Any:
    """Decode one CBOR item from untrusted bytes: scanned first (cborscan.py: item
    count, nesting, no tags, no indefinite lengths), built by cbor2 only if it passes.
    ``trusted``: this node's own store (a snapshot: big integers, any size), not scanned."""
    if not trusted:
        try:
            scan(data)  # also refuses trailing bytes
        except ScanError as exc:
            raise CodecError(f"{what}: refused CBOR ({exc})") from None
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises several types; all mean "not CBOR"
        raise CodecError(f"{what}: not valid CBOR ({exc})"[:300]) from None
    if stream.tell() != len(data):
        raise CodecError(f"{what}: {len(data) - stream.tell()} trailing bytes after the message")
    return item


def _name(value: object) -> str:
    return type(value).__name__


def _field(message: dict, key: str, kind: str) -> Any:
    if key not in message:
        raise CodecError(f"{kind}: missing field {shown(key)}")
    return message[key]


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"{what} must be an integer, got {_name(value)}")
    if not low <= value <= high:
        raise CodecError(f"{what} {show_int(value)} is out of range {low}..{high}")
    return value


def _list(value: object, what: str, limit: int) -> list:
    if not isinstance(value, list):
        raise CodecError(f"{what} must be an array, got {_name(value)}")
    if len(value) > limit:
        raise CodecError(f"{what} has {len(value)} items, more than the limit of {limit}")
    return value


def event_from_wire(item: object, where: str = "event") -> Order | Cancel:
    item = _list(item, where, 9)  # an order's 9 fields are the most
    if not item:
        raise CodecError(f"{where} is empty")
    tag = item[0]
    try:
        if type(tag) is int and tag == _ORDER_TAG:
            if len(item) != 9:
                raise CodecError(f"{where}: an order has 9 fields, got {len(item)}")
            _, replica, seq, clock, side, kind, price, qty, account = item
            side = SIDES[_int(side, f"{where}: side", 0, len(SIDES) - 1)]
            kind = TYPES[_int(kind, f"{where}: type", 0, len(TYPES) - 1)]
            if kind == MARKET and (type(price) is not int or price != 0):
                raise CodecError(f"{where}: a market order must carry price 0")
            return make_order(clock, replica, seq, side, kind, price, qty, account)
        if type(tag) is int and tag == _CANCEL_TAG:
            if len(item) != 6:
                raise CodecError(f"{where}: a cancel has 6 fields, got {len(item)}")
            _, replica, seq, clock, target_replica, target_seq = item
            return make_cancel(clock, replica, seq, target_replica, target_seq)
        if type(tag) is int and tag == _MEMBER_TAG:
            if len(item) != 8:
                raise CodecError(f"{where}: a membership event has 8 fields, got {len(item)}")
            _, replica, seq, clock, action, target, last_seq, key = item
            action = MEMBER_ACTIONS[_int(action, f"{where}: action", 0,
                                         len(MEMBER_ACTIONS) - 1)]
            return make_member(clock, replica, seq, action, target, last_seq, key)
    except CodecError:
        raise
    except ValueError as exc:  # EventError, DotError, AmountError
        raise CodecError(f"{where}: {exc}") from None
    raise CodecError(f"{where}: unknown event tag {shown(tag)}")


def _keyed(items: object, where: str, shape: str):
    """Entries ``[replica, ...]`` of a per-replica table: each a list of the
    shape's width, a valid replica id first, each replica once. Yields
    (label, replica, rest)."""
    names = shape.strip("[]").split(", ")
    seen = set()
    for i, entry in enumerate(_list(items, where, MAX_REPLICAS)):
        entry = _list(entry, f"{where}[{i}]", len(names))
        if len(entry) != len(names):
            raise CodecError(f"{where}[{i}] must be {shape}")
        replica = entry[0]
        try:
            check_replica(replica)
        except DotError as exc:
            raise CodecError(f"{where}[{i}]: {exc}") from None
        if replica in seen:
            raise CodecError(f"{where}: replica {shown(replica)} appears twice")
        seen.add(replica)
        yield f"{where}[{i}]", replica, entry[1:]


def context_from_wire(items: object, where: str = "context") -> CausalContext:
    vv: dict[str, int] = {}
    cloud: dict[str, list[int]] = {}
    cloud_total = 0
    for label, replica, (top, extra) in _keyed(items, where, "[replica, seq, [cloud...]]"):
        vv[replica] = _int(top, f"{label} seq", 0, MAX_SEQ)
        extra = _list(extra, f"{label} cloud", MAX_CLOUD - cloud_total)
        cloud_total += len(extra)
        for seq in extra:
            _int(seq, f"{label} cloud seq", 1, MAX_SEQ)
        cloud[replica] = extra
    return CausalContext.from_parts(vv, cloud)


def _total(decode):
    """Whatever goes wrong inside a decoder surfaces as CodecError, nothing else."""

    def wrapper(data: bytes):
        try:
            return decode(data)
        except CodecError:
            raise
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise CodecError(f"malformed message ({type(exc).__name__}: {exc})"[:300]) from None

    wrapper.__name__ = decode.__name__
    wrapper.__doc__ = decode.__doc__
    return wrapper


def claims_from_wire(items: object, where: str = "claims") -> list[Claim]:
    claims = {}
    for label, replica, (seq, clock) in _keyed(items, where, "[replica, seq, clock]"):
        claims[replica] = Claim(replica, _int(seq, f"{label} seq", 0, MAX_SEQ),
                                _int(clock, f"{label} clock", 0, MAX_CLOCK))
    return [claims[r] for r in sorted(claims)]


@_total
def decode_context_claims(data: bytes) -> tuple[CausalContext, list[Claim]]:
    message = _loads(data, "context")
    context = context_from_wire(_field(message, "context", "context"))
    return context, claims_from_wire(message.get("claims", []))


@_total
def decode_delta_claims(data: bytes) -> tuple[AWORSet, list[Claim]]:
    message, proven = _loads_proving(data, "delta")
    claims = claims_from_wire(message.get("claims", []))
    return _delta_from_message(message, proven), claims


@_total
def decode_event(data: bytes) -> Order | Cancel:
    message = _loads(data, "event")
    return event_from_wire(_field(message, "event", "event"))


@_total
def decode_context(data: bytes) -> CausalContext:
    message = _loads(data, "context")
    return context_from_wire(_field(message, "context", "context"))


@_total
def decode_delta(data: bytes) -> AWORSet:
    return _delta_from_message(*_loads_proving(data, "delta"))


def _delta_from_message(message: dict, proven: bool = False) -> AWORSet:
    """``proven``: the scan proved the message's one long array (cborscan.scan_proving)."""
    items = _list(_field(message, "events", "delta"), "delta events", MAX_EVENTS)
    context = context_from_wire(_field(message, "context", "delta"), "delta context")
    in_order = False
    if proven and len(items) >= _LONG:  # then it is the array the scan proved
        events, store, in_order = _proven_events(items, "delta event", _Names())
    else:
        events = events_from_wire(items, "delta event", _Names())
        store = _filed(events)
    if sum(map(len, store.values())) != len(events) or not _covers(context, store):
        _explain_dots(events, context)  # raises, naming the first offending event
    if in_order:  # the replay's proof, on copies nobody else holds (see InOrderDelta)
        delta = InOrderDelta()
        delta.proof = (tuple(events), {r: dict(seqs) for r, seqs in store.items()})
    else:
        delta = AWORSet()
    delta.store = store
    delta.context = context
    return delta


def _filed(events: list) -> dict[str, dict[int, Order | Cancel]]:
    """The events under their dots, in the order given (a later one of a dot
    repeated replaces the earlier: the caller counts them)."""
    store: dict[str, dict[int, Order | Cancel]] = {}
    for event in events:
        seqs = store.get(event[1])
        if seqs is None:
            seqs = store[event[1]] = {}
        seqs[event[2]] = event
    return store


def _covers(context: CausalContext, store: dict[str, dict[int, Any]]) -> bool:
    """Whether ``context`` has seen every dot of ``store`` (one pass per replica)."""
    vv, cloud = context.vv, context.cloud
    for replica, seqs in store.items():
        top = vv.get(replica, 0)
        if max(seqs) > top:
            extra = cloud.get(replica, ())
            if any(seq > top and seq not in extra for seq in seqs):
                return False
    return True


def _explain_dots(events: list, context: CausalContext) -> None:
    """Raise CodecError for the first event whose dot repeats or that ``context`` lacks."""
    seen = set()
    for i, event in enumerate(events):
        dot = (event.replica, event.seq)
        if dot in seen:
            raise CodecError(f"delta event {i}: dot {event.replica}:{event.seq} appears twice")
        if not context.has(*dot):
            raise CodecError(
                f"delta event {i}: dot {event.replica}:{event.seq} is not covered by the "
                "delta's context"
            )
        seen.add(dot)
    raise AssertionError("no offending event")  # pragma: no cover: callers checked


def events_from_wire(items: list, where: str = "event",
                     names: _Names | None = None) -> list[Order | Cancel | Member]:
    """The events of wire ``items`` in order, or CodecError naming the first bad one.

    The hot loop of every message that carries events: plainly valid orders
    and cancels (exact ``type`` tests, the same rules as ``event_from_wire``)
    are built directly, with their strings checked once per message
    (``names``); anything else goes the careful way, which says what is wrong
    or builds what the loop does not (membership events). ``where`` names
    the items in errors ("<where> <index>"); ``names`` may be shared by the
    messages of one exchange.
    """
    if names is None:
        names = _Names()
    out: list = []
    append = out.append
    replicas, accounts = names.replicas, names.accounts
    for item in items:
        if type(item) is list:
            size = len(item)
            if size == 9:
                tag, replica, seq, clock, side, kind, price, qty, account = item
                if (
                    tag == 0 and type(tag) is int
                    and type(seq) is int and 0 < seq <= MAX_SEQ
                    and type(clock) is int and 0 < clock <= MAX_CLOCK
                    and type(side) is int and 0 <= side < 2
                    and type(kind) is int and 0 <= kind < 5
                    and type(qty) is int and 0 < qty <= MAX_UNITS
                    and type(price) is int
                    and ((0 < price <= MAX_UNITS) if kind != 1 else price == 0)
                    and type(replica) is str and type(account) is str
                ):
                    try:  # subscripts, not get(), as in _proven_events
                        replica = replicas[replica]
                        account = accounts[account]
                    except KeyError:  # a string first seen here: checked
                        replica = names.replica(replica)
                        account = names.account(account)
                    if replica is not None and account is not None:
                        append(_new(Order, (clock, replica, seq, ORDER, SIDES[side],
                                            TYPES[kind], price, qty, account)))
                        continue
            elif size == 6:
                tag, replica, seq, clock, target_replica, target_seq = item
                if (
                    tag == 1 and type(tag) is int
                    and type(seq) is int and 0 < seq <= MAX_SEQ
                    and type(clock) is int and 0 < clock <= MAX_CLOCK
                    and type(target_seq) is int and 0 < target_seq <= MAX_SEQ
                    and type(replica) is str and type(target_replica) is str
                ):
                    try:
                        replica = replicas[replica]
                        target_replica = replicas[target_replica]
                    except KeyError:
                        replica = names.replica(replica)
                        target_replica = names.replica(target_replica)
                    if replica is not None and target_replica is not None:
                        append(_new(Cancel, (clock, replica, seq, CANCEL, target_replica,
                                             target_seq)))
                        continue
        append(event_from_wire(item, f"{where} {len(out)}"))
    return out


_LONG = 24  # entries from which CBOR writes an array's length after its first byte


def _proven_events(items: list, where: str, names: _Names
                   ) -> tuple[list[Order | Cancel], dict[str, dict[int, Order | Cancel]], bool]:
    """``events_from_wire`` for an array the scan proved (``cborscan.scan_proving``):
    every entry a list of 9 (an order: tag 0, text, then ints but the account,
    side and type below 24) or of 6 (a cancel: tag 1, text, int, int, text,
    int), every int unsigned. So no type is tested here; every range, id and
    account is, by the same rules, and anything that fails one goes the
    careful way (``event_from_wire``), which says what is wrong. The loop is
    ``events_from_wire``'s less its type tests (keep the two alike:
    tests/test_codec_proven.py holds them to the same events and refusals).

    Also the events filed under their dots (``_filed``'s store), built in the
    same loop from the replica and seq it holds: a second loop over the events
    cost a replay about 1,600 instructions per event (reading an event's
    fields back is the generic, dear, way).

    And whether the array is a replay's proof (``aworset.InOrderDelta``):
    each event past the one before it by clock, or at the same clock by
    replica (so in position order, and no origin's clock repeats), and each
    origin's seqs 1, 2, 3, ... in the array's order. The loop has the clock
    and replica in hand: one comparison per event, and a sort of each
    origin's sorted seqs at C speed, where checking the same of the store at
    merge time (and sorting the events) cost a replay about 1,450 per event.
    """
    out: list = []
    append = out.append
    store: dict[str, dict[int, Order | Cancel]] = {}
    replicas, accounts = names.replicas, names.accounts
    in_order = True
    last_clock = 0
    last_replica = ""
    for item in items:
        if len(item) == 9:
            _, replica, seq, clock, side, kind, price, qty, account = item
            if (
                0 < seq <= MAX_SEQ and 0 < clock <= MAX_CLOCK and side < 2 and kind < 5
                and 0 < qty <= MAX_UNITS
                and ((0 < price <= MAX_UNITS) if kind != 1 else price == 0)
            ):
                try:  # subscripts, not get(): a string first seen is checked below
                    replica = replicas[replica]
                    account = accounts[account]
                except KeyError:
                    replica = names.replica(replica)
                    account = names.account(account)
                if replica is not None and account is not None:
                    event = _new(Order, (clock, replica, seq, ORDER, SIDES[side],
                                         TYPES[kind], price, qty, account))
                    append(event)
                    try:
                        store[replica][seq] = event
                    except KeyError:  # the first event of its replica
                        store[replica] = {seq: event}
                    if clock <= last_clock and (clock < last_clock or replica <= last_replica):
                        in_order = False
                    last_clock = clock
                    last_replica = replica
                    continue
        else:
            _, replica, seq, clock, target_replica, target_seq = item
            if 0 < seq <= MAX_SEQ and 0 < clock <= MAX_CLOCK and 0 < target_seq <= MAX_SEQ:
                try:
                    replica = replicas[replica]
                    target_replica = replicas[target_replica]
                except KeyError:
                    replica = names.replica(replica)
                    target_replica = names.replica(target_replica)
                if replica is not None and target_replica is not None:
                    event = _new(Cancel, (clock, replica, seq, CANCEL, target_replica,
                                          target_seq))
                    append(event)
                    try:
                        store[replica][seq] = event
                    except KeyError:
                        store[replica] = {seq: event}
                    if clock <= last_clock and (clock < last_clock or replica <= last_replica):
                        in_order = False
                    last_clock = clock
                    last_replica = replica
                    continue
        event = event_from_wire(item, f"{where} {len(out)}")
        append(event)
        in_order = False  # the careful way took it: no proof needed for what is rare
        try:
            store[event[1]][event[2]] = event
        except KeyError:
            store[event[1]] = {event[2]: event}
    for seqs in store.values() if in_order else ():
        # each origin's seqs 1..n as filed (so its clocks rise along them): distinct
        # ints ascending from 1 to their count; sorting a sorted list is one pass
        keys = list(seqs)
        if keys[0] != 1 or keys[-1] != len(keys) or keys != sorted(keys):
            in_order = False
            break
    return out, store, in_order


def _proven_block(items: list, replica: str, first: int, names: _Names
                  ) -> list[Order | Cancel] | None:
    """The events of a signed block's body that the scan proved
    (``cborscan.scan_proving``), each of ``replica`` with seqs ``first``,
    ``first`` + 1, ... in order; None at anything else, having built nothing
    the caller keeps: the caller then takes ``events_from_wire`` and its
    check, which say what is wrong (so no refusal is worded here).

    ``_proven_events``' loop (keep the two alike) less what a block does not
    need: the events filed under their dots and the replay's proof; and with
    the block's own rules in it (one replica, consecutive seqs), where the
    block's decode checked them in two more passes. ``replica`` was checked
    by the caller (``check_replica``), so an event's equal to it is valid.
    """
    if first + len(items) - 1 > MAX_SEQ:
        return None
    out: list = []
    append = out.append
    accounts = names.accounts
    seq_expected = first
    for item in items:
        if len(item) == 9:
            _, origin, seq, clock, side, kind, price, qty, account = item
            if (
                seq == seq_expected and origin == replica
                and 0 < clock <= MAX_CLOCK and side < 2 and kind < 5 and 0 < qty <= MAX_UNITS
                and ((0 < price <= MAX_UNITS) if kind != 1 else price == 0)
            ):
                try:  # a subscript, not get(): a string first seen is checked below
                    account = accounts[account]
                except KeyError:
                    account = names.account(account)
                    if account is None:
                        return None
                append(_new(Order, (clock, replica, seq, ORDER, SIDES[side], TYPES[kind],
                                    price, qty, account)))
                seq_expected += 1
                continue
            return None
        _, origin, seq, clock, target_replica, target_seq = item
        if (seq == seq_expected and origin == replica and 0 < clock <= MAX_CLOCK
                and 0 < target_seq <= MAX_SEQ):
            target_replica = names.replica(target_replica)
            if target_replica is not None:
                append(_new(Cancel, (clock, replica, seq, CANCEL, target_replica,
                                     target_seq)))
                seq_expected += 1
                continue
        return None
    return out


class _Names:
    """Validated strings of one message, each kept once (shared by its events).

    Replica ids and account labels follow different rules, so each has its
    own table: a string valid as an account is not thereby a valid replica id.
    """

    __slots__ = ("replicas", "accounts")

    def __init__(self) -> None:
        self.replicas: dict[str, str] = {}
        self.accounts: dict[str, str] = {}

    def replica(self, name: object) -> str | None:
        if type(name) is not str:
            return None
        known = self.replicas.get(name)
        if known is None:
            try:
                check_replica(name)
            except DotError:
                return None
            known = self.replicas[name] = name
        return known

    def account(self, name: object) -> str | None:
        if type(name) is not str:
            return None
        known = self.accounts.get(name)
        if known is None:
            if len(name) > MAX_ACCOUNT_LEN or not name.isprintable():
                return None
            known = self.accounts[name] = name
        return known


_new = tuple.__new__


__all__ = [
    "CANCEL", "Claim", "CodecError", "VERSION", "decode_context", "decode_context_claims",
    "decode_delta", "decode_delta_claims", "decode_event", "encode_context", "encode_delta",
    "encode_event", "event_to_wire", "context_to_wire",
]


# -- snapshots --------------------------------------------------------------
# Why an event was rejected, as a snapshot carries it (a small integer).
REASONS = (
    "clock does not increase along its replica's seq",
    "an earlier event of its replica was rejected for its clock",
    "its replica had left or was evicted before this event",
    "post_only order would trade on arrival",
    "fok order cannot be filled in full",
    "a replica may only cancel its own orders",
    "a cancel must target an earlier event of its own replica",
    "a replica leaves only itself, as its own last event",
    "a replica cannot evict itself (it leaves instead)",
    "owner left",  # not rejections: why a leave or evict removed an order's remainder
    "owner evicted",
    "equivocation",  # past its replica's conviction cut (proofs.py)
)


def _reason_code(reason: str | None) -> int | None:
    return None if reason is None else REASONS.index(reason)


def encode_snapshot(snapshot, claims=()) -> bytes:
    """A replica's standing (snapshot.Snapshot) as one message."""
    return _dumps({
        "v": VERSION,
        "kind": "snapshot",
        "context": context_to_wire(snapshot.context),
        "events": [event_to_wire(e) for e in snapshot.events],
        "base": [[r, q, amount, filled, _reason_code(reason)]
                 for r, q, amount, filled, reason in snapshot.base],
        "fills_base": snapshot.fills_base,
        "invalid": [[r, s, REASONS.index(reason)] for r, s, reason in snapshot.invalid],
        "chain": [[r, c, bool(p)] for r, c, p in snapshot.chain],
        "cutoff": [list(x) for x in snapshot.cutoff],
        "joins": [list(x) for x in snapshot.joins],
        "counted": [list(x) for x in snapshot.counted],
        "founded": bool(snapshot.founded),
        "final": snapshot.final,
        "events_total": snapshot.events_total,
        "digest_sum": snapshot.digest_sum,
        "uncounted": snapshot.uncounted,
        "claims": claims_to_wire(claims),
        "keys": [[r, k] for r, k in snapshot.keys],
    })


def _pairs(items: object, what: str, high: int) -> list[tuple[str, int]]:
    out = {}
    for label, replica, (number,) in _keyed(items, what, "[replica, number]"):
        out[replica] = _int(number, label, 0, high)
    return sorted(out.items())


@_total
def decode_snapshot(data: bytes):
    """Return (Snapshot, claims); CodecError if anything is off."""
    message = _loads(data, "snapshot", trusted=True)  # never from a peer
    context = context_from_wire(_field(message, "context", "snapshot"), "snapshot context")
    events = []
    held: dict[tuple[str, int], object] = {}
    for i, item in enumerate(_list(_field(message, "events", "snapshot"), "snapshot events",
                                   MAX_EVENTS)):
        event = event_from_wire(item, f"snapshot event {i}")
        if (event.replica, event.seq) in held:
            raise CodecError(f"snapshot event {i}: dot appears twice")
        if not context.has(event.replica, event.seq):
            raise CodecError(f"snapshot event {i}: not covered by the snapshot's context")
        held[(event.replica, event.seq)] = event
        events.append(event)
    base = []
    seen_base = set()
    for i, entry in enumerate(_list(_field(message, "base", "snapshot"), "snapshot base",
                                    MAX_EVENTS)):
        entry = _list(entry, f"snapshot base[{i}]", 5)
        if len(entry) != 5:
            raise CodecError(f"snapshot base[{i}] must be [replica, seq, amount, filled, reason]")
        replica, seq, amount, filled, code = entry
        event = held.get((replica, seq)) if isinstance(replica, str) and type(seq) is int \
            else None
        if event is None or (replica, seq) in seen_base:
            raise CodecError(f"snapshot base[{i}] must name an event of the snapshot, once")
        seen_base.add((replica, seq))
        reason = None if code is None else REASONS[_int(code, f"snapshot base[{i}] reason", 0,
                                                         len(REASONS) - 1)]
        if event.kind == ORDER:
            amount = _int(amount, f"snapshot base[{i}] remaining", 0, event.qty)
            filled = _int(filled, f"snapshot base[{i}] filled", 0, event.qty - amount)
            if reason in CANCEL_REASONS and (amount or filled == event.qty):
                raise CodecError(f"snapshot base[{i}]: an order cancelled by a leave or "
                                 "evict has nothing resting and something cancelled")
        elif reason in CANCEL_REASONS:
            raise CodecError(f"snapshot base[{i}]: only an order can be cancelled by a leave "
                             "or evict")
        else:
            amount = _int(amount, f"snapshot base[{i}] removed", 0, MAX_UNITS)
            filled = _int(filled, f"snapshot base[{i}] filled", 0, 0)
        base.append((replica, seq, amount, filled, reason))
    invalid = []
    for i, entry in enumerate(_list(_field(message, "invalid", "snapshot"), "snapshot invalid",
                                    MAX_EVENTS)):
        entry = _list(entry, f"snapshot invalid[{i}]", 3)
        names_event = (len(entry) == 3 and isinstance(entry[0], str) and type(entry[1]) is int
                       and (entry[0], entry[1]) in held)
        if not names_event:
            raise CodecError(f"snapshot invalid[{i}] must name an event of the snapshot")
        code = _int(entry[2], f"snapshot invalid[{i}] reason", 0, len(REASONS) - 1)
        if REASONS[code] in CANCEL_REASONS:
            raise CodecError(f"snapshot invalid[{i}] reason is not a rejection")
        invalid.append((entry[0], entry[1], REASONS[code]))
    chain = []
    for i, entry in enumerate(_list(_field(message, "chain", "snapshot"), "snapshot chain",
                                    MAX_REPLICAS)):
        entry = _list(entry, f"snapshot chain[{i}]", 3)
        if len(entry) != 3 or not isinstance(entry[2], bool):
            raise CodecError(f"snapshot chain[{i}] must be [replica, clock, poisoned]")
        (replica, clock), = _pairs([entry[:2]], f"snapshot chain[{i}]", MAX_CLOCK)
        chain.append((replica, clock, entry[2]))
    founded = message.get("founded")
    if not isinstance(founded, bool):
        raise CodecError("snapshot: founded must be true or false")
    snapshot = Snapshot(
        context=context,
        events=sorted(events),
        base=base,
        fills_base=_int(_field(message, "fills_base", "snapshot"), "fills_base", 0, MAX_SEQ),
        invalid=invalid,
        chain=chain,
        cutoff=_pairs(_field(message, "cutoff", "snapshot"), "snapshot cutoff", MAX_SEQ),
        joins=_pairs(_field(message, "joins", "snapshot"), "snapshot joins", MAX_CLOCK),
        counted=_pairs(_field(message, "counted", "snapshot"), "snapshot counted", MAX_CLOCK),
        founded=founded,
        final=_int(_field(message, "final", "snapshot"), "final", 0, MAX_CLOCK),
        events_total=_int(_field(message, "events_total", "snapshot"), "events_total", 0,
                          MAX_SEQ),
        digest_sum=_int(_field(message, "digest_sum", "snapshot"), "digest_sum", 0,
                        2**256 - 1),
    )
    keys = []
    for label, replica, (key,) in _keyed(message.get("keys", []), "snapshot keys",
                                         "[replica, key]"):
        if not owns(replica, key):
            raise CodecError(f"{label}: the key is not the one the replica id was derived from")
        keys.append((replica, key))
    uncounted = _int(message.get("uncounted", 0), "snapshot uncounted", 0, snapshot.events_total)
    claims = claims_from_wire(message.get("claims", []))
    return snapshot._replace(keys=tuple(keys), uncounted=uncounted), claims
