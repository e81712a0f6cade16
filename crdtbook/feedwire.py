"""Feed wire: the messages peers exchange, signed blocks and everything around them.

Theory of operation
-------------------
Built on codec.py's rules (canonical CBOR, strict and total decoding: a
malformed message raises ``CodecError`` naming the field, nothing is
returned half-built) and its helpers. This module holds the messages of
signed feeds (feed.py, door.py, detection.py, proofs.py); codec.py keeps
events, contexts, deltas and snapshots.

The messages peers exchange since events are signed (the delta and context
messages above remain for trusted use: tests, the fuzzer, local tooling).

    block    [replica, first_seq, body, sig]   body: canonical CBOR of its events
    sclaims  [[replica, seq, clock, sig], ...]  sorted by replica
    tips     [[replica, last_seq, hash], ...]   sorted by replica
    blocks   {"v": 1, "kind": "blocks", "blocks": [block...], "claims": sclaims,
              "proofs": [proof...], "forks": [[replica, prev, [block...]]...],
              "suspects": [replica...]}
    pull     {"v": 1, "kind": "pull", "context": context, "tips": tips, "claims": sclaims,
              "skips": [[replica, [[last_seq, hash]...]]...],
              "convicted": [[replica, cut]...]}
    proof    [0, replica, prev, [first, body, sig], [first, body, sig]]    a fork
             [1, replica, prev, [first, body, sig], [seq, clock, sig]]     a broken promise

"proofs", "forks", "suspects", "skips" and "convicted" are optional (absent
when empty, so a message without them has the bytes it always had); they
carry the detection of equivocation (see door.py, proofs.py).
A block's events must all be of its replica, with seqs first_seq, first_seq+1,
... in order; signatures are checked by the door, not here.
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import NamedTuple

from .cborscan import ScanError, scan_proving
from .clock import MAX_CLOCK
from .codec import (
    _LONG,
    MAX_BYTES,
    MAX_EVENTS,
    MAX_REPLICAS,
    VERSION,
    CodecError,
    _dumps,
    _field,
    _int,
    _keyed,
    _list,
    _loads,
    _name,
    _Names,
    _pairs,
    _proven_block,
    _total,
    context_from_wire,
    context_to_wire,
    event_to_wire,
    events_from_wire,
    loads,
)
from .context import CausalContext
from .dot import MAX_SEQ, DotError, check_replica
from .feed import HASH_BYTES, Block, SignedClaim, Tip
from .keys import SIG_BYTES
from .proofs import FORK, Proof, broken_promise, broken_seq, fork

MAX_BLOCKS = 100_000
MAX_SKIPS = 128
_replica, _seq = itemgetter(1), itemgetter(2)


def encode_body(events) -> bytes:
    """A block's bytes: the canonical CBOR array of its events' wire forms."""
    return _dumps([event_to_wire(e) for e in events])


def _canonical_event() -> re.Pattern:
    """An order or a cancel in canonical CBOR (shortest heads only), its fields
    after the clock captured (group ``o`` or ``c``). Ids and accounts of 0..23
    bytes and ids of 32 (keys.py) are matched; anything else is left to cbor2
    (see below)."""
    uint = (rb"(?:[\x00-\x17]|\x18[\x18-\xff]|\x19[\x01-\xff]."
            rb"|\x1a(?:[\x01-\xff]...|\x00[\x01-\xff]..)"
            rb"|\x1b(?:[\x01-\xff]...|\x00[\x01-\xff]..|\x00\x00[\x01-\xff].|\x00\x00\x00[\x01-\xff])"
            rb".{4})")
    short = b"|".join(bytes([0x60 + n]) + b".{%d}" % n for n in range(24))
    ident = rb"(?:\x78\x20.{32}|" + short + b")"
    order = rb"\x89\x00" + ident + uint + uint + rb"(?P<o>[\x00-\x17][\x00-\x17]" + uint + uint \
        + b"(?:" + short + b"))"
    cancel = rb"\x86\x01" + ident + uint + uint + b"(?P<c>" + ident + uint + b")"
    return re.compile(order + b"|" + cancel, re.DOTALL)


_CANONICAL_EVENT = _canonical_event()


def event_encodings(block: Block) -> list[tuple[bytes, bytes]] | None:
    """Each event's canonical CBOR as it lies in ``block.body``, with its fields
    after the clock (a slice of it); None unless every event is found.

    The digest hashes an event's canonical CBOR and the store keeps its fields
    after the clock (replica.py, node/store/sqlite.py): both are slices of the
    body a block already holds, so neither needs cbor2 to encode it again.
    The slices are taken only where each byte is what ``encode_body`` writes
    (shortest heads, the events in order, nothing after them): a body encoded
    any other way by its origin is decoded all the same, but gives None here,
    and its events are encoded anew. Membership events and long accounts
    (rare) give None too."""
    body, events = block.body, block.events
    start = _array_head(len(events))
    if not events or not body.startswith(start):  # a block read back undecoded: no events
        return None
    # one C call per event: the scanner matches where the last match ended
    matches = list(iter(_CANONICAL_EVENT.scanner(body, len(start)).match, None))
    if len(matches) != len(events) or matches[-1].end() != len(body):
        return None
    return [m.group(0, m.lastindex) for m in matches]


def encodings(blocks) -> dict:
    """``id(event)`` -> ``(event, (canonical CBOR, its fields after the clock))``
    for the events of ``blocks`` whose bodies can be sliced (see
    event_encodings): what ``Replica.digest`` and a store reuse instead of
    encoding each event again."""
    found: dict = {}
    for block in blocks:
        sliced = event_encodings(block)
        if sliced is not None:
            events = block.events
            found.update(zip(map(id, events), zip(events, sliced, strict=True), strict=True))
    return found


def _array_head(count: int) -> bytes:
    if count < 24:
        return bytes([0x80 + count])
    for info, width in ((24, 1), (25, 2), (26, 4)):
        if count < 1 << (8 * width):
            return bytes([0x80 + info]) + count.to_bytes(width, "big")
    return b"\x9b" + count.to_bytes(8, "big")


def signed_claims_to_wire(claims) -> list:
    return [[c.replica, c.seq, c.clock, c.sig] for c in sorted(claims)]


def _block_to_wire(b: Block) -> list:
    return [b.replica, b.first, b.body, b.sig]


def proof_to_wire(proof: Proof) -> list:
    head = [proof.block.first, proof.block.body, proof.block.sig]
    if proof.kind == FORK:
        tail = [proof.other.first, proof.other.body, proof.other.sig]
        return [0, proof.replica, proof.prev, head, tail]
    claim = proof.claim
    return [1, proof.replica, proof.prev, head, [claim.seq, claim.clock, claim.sig]]


def encode_blocks(blocks, claims=(), proofs=(), forks=(), suspects=()) -> bytes:
    message = {
        "v": VERSION,
        "kind": "blocks",
        "blocks": [_block_to_wire(b) for b in blocks],
        "claims": signed_claims_to_wire(claims),
    }
    if proofs:
        message["proofs"] = [proof_to_wire(p) for p in proofs]
    if forks:
        message["forks"] = [[r, prev, [_block_to_wire(b) for b in chain]]
                            for r, prev, chain in forks]
    if suspects:
        message["suspects"] = sorted(suspects)
    return _dumps(message)


def encode_pull(context: CausalContext, tips=(), claims=(), skips=None,
                convicted=None) -> bytes:
    message = {
        "v": VERSION,
        "kind": "pull",
        "context": context_to_wire(context),
        "tips": [[r, t.last, t.hash] for r, t in sorted(tips)],
        "claims": signed_claims_to_wire(claims),
    }
    if skips:
        message["skips"] = [[r, [[t.last, t.hash] for t in tips_]]
                            for r, tips_ in sorted(skips.items())]
    if convicted:
        message["convicted"] = [[r, cut] for r, cut in sorted(convicted.items())]
    return _dumps(message)


def _bytes(value: object, what: str, size: int | None = None, limit: int = MAX_BYTES) -> bytes:
    if not isinstance(value, bytes):
        raise CodecError(f"{what} must be a byte string, got {_name(value)}")
    if size is not None and len(value) != size:
        raise CodecError(f"{what} must be {size} bytes, got {len(value)}")
    if len(value) > limit:
        raise CodecError(f"{what} has {len(value)} bytes, more than {limit}")
    return value


def block_from_wire(item: object, where: str, names: _Names | None = None) -> Block:
    item = _list(item, where, 4)
    if len(item) != 4:
        raise CodecError(f"{where} must be [replica, first_seq, body, sig]")
    replica, first, body, sig = item
    try:
        check_replica(replica)
    except DotError as exc:
        raise CodecError(f"{where}: {exc}") from None
    first = _int(first, f"{where} first seq", 1, MAX_SEQ)
    body = _bytes(body, f"{where} body")
    sig = _bytes(sig, f"{where} signature", SIG_BYTES)
    try:
        proven = scan_proving(body)  # loads' scan (the same refusals), and its proof
    except ScanError as exc:
        raise CodecError(f"{where} body: refused CBOR ({exc})") from None
    items = loads(body, f"{where} body", trusted=True)  # scanned just above
    items = _list(items, f"{where} body", MAX_EVENTS)
    if not items:
        raise CodecError(f"{where} holds no events")
    names = names or _Names()
    if proven and len(items) >= _LONG:  # then it is the array the scan proved
        events = _proven_block(items, replica, first, names)
        if events is not None:
            return Block(replica, first, first + len(events) - 1, body, sig, tuple(events))
    events = events_from_wire(items, f"{where} event", names)
    if (not all(map(replica.__eq__, map(_replica, events)))
            or list(map(_seq, events)) != list(range(first, first + len(events)))):
        for i, event in enumerate(events):
            if event.replica != replica or event.seq != first + i:
                raise CodecError(f"{where} event {i} must be {replica}:{first + i}, "
                                 f"got {event.replica}:{event.seq}")
    return Block(replica, first, first + len(events) - 1, body, sig, tuple(events))


def signed_claims_from_wire(items: object, where: str = "claims") -> list[SignedClaim]:
    claims = []
    for label, replica, (seq, clock, sig) in _keyed(items, where,
                                                     "[replica, seq, clock, sig]"):
        claims.append(SignedClaim(replica, _int(seq, f"{label} seq", 0, MAX_SEQ),
                                  _int(clock, f"{label} clock", 0, MAX_CLOCK),
                                  _bytes(sig, f"{label} signature", SIG_BYTES)))
    return sorted(claims)


@_total
def decode_blocks(data: bytes) -> tuple[list[Block], list[SignedClaim]]:
    """Return (blocks, signed claims) of a blocks message; CodecError if malformed."""
    message = _loads(data, "blocks")
    names = _Names()
    blocks = [block_from_wire(item, f"block {i}", names) for i, item in
              enumerate(_list(_field(message, "blocks", "blocks"), "blocks", MAX_BLOCKS))]
    total = sum(len(b.events) for b in blocks)
    if total > MAX_EVENTS:
        raise CodecError(f"blocks hold {total} events, more than the limit of {MAX_EVENTS}")
    return blocks, signed_claims_from_wire(message.get("claims", []))


@_total
def decode_pull(data: bytes) -> tuple[CausalContext, dict[str, Tip], list[SignedClaim]]:
    """Return (context, tips, signed claims) of a pull request; CodecError if malformed."""
    return _pull_from_message(_loads(data, "pull"))


def _pull_from_message(message: dict):
    context = context_from_wire(_field(message, "context", "pull"))
    tips = {}
    for label, replica, (last, hash_) in _keyed(message.get("tips", []), "pull tips",
                                                "[replica, last_seq, hash]"):
        tips[replica] = Tip(_int(last, f"{label} seq", 0, MAX_SEQ),
                            _bytes(hash_, f"{label} hash", HASH_BYTES))
    return context, tips, signed_claims_from_wire(message.get("claims", []))


def proof_from_wire(item: object, where: str, names: _Names | None = None) -> Proof:
    item = _list(item, where, 5)
    if len(item) != 5:
        raise CodecError(f"{where} must be [kind, replica, prev, block, evidence]")
    tag, replica, prev, head, tail = item
    tag = _int(tag, f"{where} kind", 0, 1)
    prev = _bytes(prev, f"{where} prev", HASH_BYTES)
    head = _list(head, f"{where} block", 3)
    tail = _list(tail, f"{where} evidence", 3)
    if len(head) != 3 or len(tail) != 3:
        raise CodecError(f"{where}: a block is [first, body, sig], evidence likewise")
    block = block_from_wire([replica, *head], f"{where} block", names)
    if tag == 0:
        other = block_from_wire([replica, *tail], f"{where} other block", names)
        if other.first != block.first or other.body == block.body:
            raise CodecError(f"{where}: a fork is two different blocks at the same seq")
        return fork(prev, block, other)
    seq, clock, sig = tail
    claim = SignedClaim(replica, _int(seq, f"{where} claim seq", 0, MAX_SEQ),
                        _int(clock, f"{where} claim clock", 0, MAX_CLOCK),
                        _bytes(sig, f"{where} claim signature", SIG_BYTES))
    if broken_seq(claim, block) is None:
        raise CodecError(f"{where}: the block breaks no promise of the claim")
    return broken_promise(claim, prev, block)


class BlocksMessage(NamedTuple):
    blocks: list
    claims: list
    proofs: list
    forks: list  # [(replica, prev hash, [Block...])]
    suspects: list


class PullMessage(NamedTuple):
    context: CausalContext
    tips: dict
    claims: list
    skips: dict  # replica -> [Tip...]
    convicted: dict  # replica -> cut


@_total
def decode_blocks_message(data: bytes) -> BlocksMessage:
    """A blocks message with every field (decode_blocks keeps to blocks and claims)."""
    message = _loads(data, "blocks")
    names = _Names()
    blocks = [block_from_wire(item, f"block {i}", names) for i, item in
              enumerate(_list(_field(message, "blocks", "blocks"), "blocks", MAX_BLOCKS))]
    proofs = [proof_from_wire(item, f"proof {i}", names) for i, item in
              enumerate(_list(message.get("proofs", []), "proofs", MAX_REPLICAS))]
    forks = []
    for label, replica, (prev, chain) in _keyed(message.get("forks", []), "forks",
                                                "[replica, prev, [block...]]"):
        prev = _bytes(prev, f"{label} prev", HASH_BYTES)
        chain = [block_from_wire(item, f"{label} block {i}", names) for i, item in
                 enumerate(_list(chain, f"{label} blocks", MAX_BLOCKS))]
        if any(b.replica != replica for b in chain):
            raise CodecError(f"{label}: every block must be of {replica}")
        forks.append((replica, prev, chain))
    total = sum(len(b.events) for b in blocks) + sum(len(b.events) for _, _, c in forks
                                                      for b in c)
    if total > MAX_EVENTS:
        raise CodecError(f"blocks hold {total} events, more than the limit of {MAX_EVENTS}")
    suspects = []
    for i, replica in enumerate(_list(message.get("suspects", []), "suspects", MAX_REPLICAS)):
        try:
            suspects.append(check_replica(replica))
        except DotError as exc:
            raise CodecError(f"suspects[{i}]: {exc}") from None
    return BlocksMessage(blocks, signed_claims_from_wire(message.get("claims", [])), proofs,
                         forks, sorted(set(suspects)))


@_total
def decode_pull_message(data: bytes) -> PullMessage:
    """A pull request with every field (decode_pull keeps to context, tips and claims)."""
    message = _loads(data, "pull")
    context, tips, claims = _pull_from_message(message)
    skips = {}
    for label, replica, (items,) in _keyed(message.get("skips", []), "pull skips",
                                           "[replica, [boundary...]]"):
        entries = []
        for i, entry in enumerate(_list(items, label, MAX_SKIPS)):
            entry = _list(entry, f"{label}[{i}]", 2)
            if len(entry) != 2:
                raise CodecError(f"{label}[{i}] must be [last_seq, hash]")
            entries.append(Tip(_int(entry[0], f"{label}[{i}] seq", 0, MAX_SEQ),
                               _bytes(entry[1], f"{label}[{i}] hash", HASH_BYTES)))
        skips[replica] = entries
    convicted = dict(_pairs(message.get("convicted", []), "pull convicted", MAX_SEQ))
    return PullMessage(context, tips, claims, skips, convicted)


def encode_proofs(proofs) -> bytes:
    """Proofs held, as a node keeps them across restarts."""
    return _dumps({"v": VERSION, "kind": "proofs",
                   "proofs": [proof_to_wire(p) for p in sorted(proofs, key=lambda p: p.replica)]})


@_total
def decode_proofs(data: bytes) -> list[Proof]:
    message = _loads(data, "proofs")
    names = _Names()
    return [proof_from_wire(item, f"proof {i}", names) for i, item in
            enumerate(_list(_field(message, "proofs", "proofs"), "proofs", MAX_REPLICAS))]
