"""CBOR scan: check the shape of untrusted CBOR before anything is built from it.

Theory of operation
-------------------
cbor2's decoder builds Python objects as it reads, so a 60 MB message of
empty arrays becomes 60 million lists (gigabytes) before any check can run,
and it decodes tags (regular expressions, sets, shared references) on its
own. ``scan`` walks the item headers instead, with an explicit stack (no
recursion), building nothing: it counts items, tracks nesting, skips string
contents in O(1), and stops at the first item past a cap. Only a message
that passes is handed to cbor2.

Rules this module keeps
-----------------------
* Refused, with a ``ScanError`` naming the offset: tags (major type 6),
  indefinite lengths, reserved additional information (28..30), a "break"
  outside an indefinite item, truncated items, bytes after the one item,
  more than ``max_items`` items, nesting deeper than ``max_depth``.
* Floats and simple values pass (the codec refuses them by type, with a
  message naming the field). So does one tag: a positive bignum of exactly
  9 bytes, the first not zero (``_BIGNUM``), which is how canonical CBOR
  writes an integer of 2^64..2^72-1. Amounts go up to 10^20 units
  (amount.py), past 2^64: without it, a node's own order of more than
  2^64 units was sealed into its feed, and every peer refused that block
  and every later one. The codec refuses such an integer anywhere else by
  its range.
* Work is linear in the number of items scanned and stops at the cap: a
  refused message costs no more than ``max_items`` steps.
* Pure: no I/O, no imports beyond the standard library.
* ``scan_proving`` proves a long array only if it is the item's one long
  array and every entry of it matched the pattern in one run: a decoder may
  then take the types of that array's entries as the pattern's (codec.py),
  never a range.

Speed: a delta is mostly one long array of events, ten items each, and a
Python step per item is half the cost of decoding it. So the entries of a
long array are first matched one after another against ``_EVENT``, a
compiled pattern of an order's or a cancel's exact encoding as this node
writes it (an id of 32 characters, integers, a short account): one C call
per block of 32 events, then per event, its entries counted as the loop would
count them (a block's by the heads of its orders and cancels, when those add
up exactly; see ``_events``). At the first entry that is anything else, the
loop below takes over at that byte, so a refusal still names its byte, and
the caps are checked at least once per block (a refusal for the cap is the
same words wherever in the block it falls).
"""

from __future__ import annotations

import re

MAX_ITEMS = 1_000_000
MAX_DEPTH = 16


class ScanError(ValueError):
    """CBOR this node does not decode: the message says what and where."""


_WIDTH = {24: 1, 25: 2, 26: 4, 27: 8}
_LONG = -1  # a string, array or map whose length follows the initial byte
_CONTAINER = -2  # an array or map of fewer than 24 entries
_REFUSED = -3  # a tag, an indefinite length, a reserved or break byte
_SHORT = -4  # a string of 24..255 bytes (its length in one byte): replica ids, bodies
_BIGNUM = b"\xc2\x49"  # tag 2 (a positive bignum) on a byte string of 9 bytes


def _table() -> list[int]:
    """Per initial byte: the bytes the whole item takes (header and contents) when
    that is known from the byte alone, else one of the negative codes above."""
    table = []
    for initial in range(256):
        major, info = initial >> 5, initial & 31
        if info >= 28 or major == 6:
            table.append(_REFUSED)
        elif major in (0, 1, 7):
            table.append(1 + _WIDTH.get(info, 0))
        elif info == 24 and major in (2, 3):
            table.append(_SHORT)
        elif info >= 24:
            table.append(_LONG)
        elif major in (2, 3):
            table.append(1 + info)
        else:
            table.append(_CONTAINER)
    return table


_SIZE = _table()


def _event() -> tuple[bytes, bytes]:
    """An order's and a cancel's array, as codec.py encodes them between nodes
    whose ids are derived from keys (keys.py: 32 characters)."""
    uint = rb"(?:[\x00-\x17]|\x1b.{8}|\x1a.{4}|\x18.|\x19..)"
    small = rb"[\x00-\x17]"
    ident = rb"\x78\x20.{32}"
    account = b"(?:" + b"|".join(bytes([0x60 + n]) + b".{%d}" % n for n in range(24)) + b")"
    order = _ORDER_HEAD + rb".{32}" + uint + uint + small + small + uint + uint + account
    cancel = _CANCEL_HEAD + rb".{32}" + uint + uint + ident + uint
    return order, cancel


# How an order's and a cancel's encoding begins: an array of 9 (6), its tag,
# a text of 32 bytes. The patterns start with them (written out, not escaped).
_ORDER_HEAD = b"\x89\x00\x78\x20"
_CANCEL_HEAD = b"\x86\x01\x78\x20"
_ORDER, _CANCEL = _event()
_EVENT = re.compile(b"(" + _ORDER + b")|(" + _CANCEL + b")", re.DOTALL)
_CHILDREN = (0, 9, 6)  # by the group that matched: an order's entries, a cancel's
# _BLOCK entries in a row, each an order or a cancel, written out (a counted
# repeat of the alternation costs the matcher more per entry than it saves),
# each an atomic group: every choice in an entry is decided by its first byte,
# so an entry matches one way or not at all, and the matcher may drop its
# backtracking state at the end of each (kept, it grew and was copied, about
# 900 instructions per entry).
_BLOCK = 32
_BLOCK_MATCH = re.compile((b"(?>" + _ORDER + b"|" + _CANCEL + b")") * _BLOCK, re.DOTALL).match


def scan(data: bytes | bytearray | memoryview, max_items: int = MAX_ITEMS,
         max_depth: int = MAX_DEPTH, plain: bool = False) -> int:
    """Check ``data`` holds exactly one CBOR item within the caps; return its item count.

    ``plain``: walk every item in Python, without the pattern (the reference
    the tests hold the fast way to: same count, same refusal, same words)."""
    return _walk(data, max_items, max_depth, plain)[0]


def scan_proving(data: bytes | bytearray | memoryview) -> bool:
    """``scan`` with the default caps (same refusals); and whether the item holds
    exactly one long array (24 entries or more), every entry of which matched
    ``_EVENT``: an order or a cancel array in exactly the pattern's shape.

    What that proves to a decoder (codec.py): an array of 24 entries or more
    in the decoded item *is* that array (it is the only one), and each of its
    entries is a list of 9 (tag 0, text, int, int, side 0..23, type 0..23,
    int, int, text) or of 6 (tag 1, text, int, int, text, int), every int
    unsigned. Ranges, ids and accounts are not proven."""
    _, longs, proven = _walk(data, MAX_ITEMS, MAX_DEPTH, False)
    return longs == 1 and proven == 1


def _walk(data: bytes | bytearray | memoryview, max_items: int, max_depth: int,
          plain: bool) -> tuple[int, int, int]:
    """The scan: (items, long arrays seen, long arrays whose every entry matched
    ``_EVENT`` in one run)."""
    data = bytes(data) if not isinstance(data, bytes) else data
    longs = proven = 0
    end = len(data)
    size = _SIZE
    pos = 0
    items = 1
    stack: list[int] = []  # children still to read of each open array or map
    runs: list[int] = []  # len(stack) inside each open long array (see _events)
    todo = 1
    try:
        while True:
            while todo:
                step = size[data[pos]]
                if step > 0:  # the common case: a scalar or a short string
                    pos += step
                    todo -= 1
                    continue
                todo -= 1
                if step == _SHORT:
                    pos += 2 + data[pos + 1]
                    continue
                initial = data[pos]
                major, info = initial >> 5, initial & 31
                if step == _REFUSED:
                    if data.startswith(_BIGNUM, pos) and data[pos + 2]:  # 2^64..2^72-1
                        pos += 11
                        continue
                    raise ScanError(_refusal(major, info, pos))
                pos += 1
                if info < 24:
                    length = info
                else:
                    width = _WIDTH[info]
                    if pos + width > end:
                        raise ScanError(f"truncated at byte {pos}")
                    length = int.from_bytes(data[pos:pos + width], "big")
                    pos += width
                if major <= 3:  # a long byte or text string
                    if length > end - pos:
                        raise ScanError(f"string at byte {pos} runs past the end")
                    pos += length
                    continue
                children = length if major == 4 else 2 * length  # 4: array, 5: map
                if not children:
                    continue
                if children > end - pos:  # each child takes at least one byte
                    raise ScanError(f"{'array' if major == 4 else 'map'} at byte {pos} claims "
                                    f"{length} entries, more than the bytes left")
                items += children
                if items > max_items:
                    raise ScanError(f"more than {max_items} items")
                if len(stack) >= max_depth:
                    raise ScanError(f"nested deeper than {max_depth}")
                stack.append(todo)
                todo = children
                if major == 4 and info >= 24:
                    longs += 1
                    if len(stack) < max_depth and not plain:
                        # a long array (the events of a message): plain events in C first
                        runs.append(len(stack))
                        pos, todo, items = _events(data, pos, todo, items, max_items)
                        if not todo:
                            proven += 1
            if not stack:
                break
            todo = stack.pop()
            if runs and runs[-1] >= len(stack):
                if runs[-1] == len(stack):  # back in a long array, past an odd entry
                    if todo:
                        pos, todo, items = _events(data, pos, todo, items, max_items)
                else:  # that long array is done
                    runs.pop()
    except IndexError:
        raise ScanError(f"truncated at byte {end}") from None
    if pos > end:
        raise ScanError(f"truncated at byte {end}")
    if pos != end:
        raise ScanError(f"{end - pos} trailing bytes after the message")
    return items, longs, proven


def _events(data: bytes, pos: int, todo: int, items: int, max_items: int
            ) -> tuple[int, int, int]:
    """Walk the plain events of a long array from ``pos`` (up to ``todo`` of them,
    counting their entries against the cap); return where the walk stopped.

    First by blocks of ``_BLOCK`` entries, one C call each: a block's orders
    are counted by their heads (``_ORDER_HEAD``), which is exact when the heads
    of both kinds found in it add up to the block's entries (no field's bytes
    look like a head: a head's bytes inside an id or an integer would add one).
    At the first block that does not match, or whose heads do not add up, and
    for the last entries, one entry at a time."""
    block, count = _BLOCK_MATCH, data.count
    while todo >= _BLOCK:
        found = block(data, pos)
        if found is None:
            break
        end = found.end()
        orders = count(_ORDER_HEAD, pos, end)
        if orders + count(_CANCEL_HEAD, pos, end) != _BLOCK:
            break
        items += 6 * _BLOCK + 3 * orders  # 9 entries in an order, 6 in a cancel
        if items > max_items:
            raise ScanError(f"more than {max_items} items")
        todo -= _BLOCK
        pos = end
    if not todo:
        return pos, todo, items
    found = None
    for found in iter(_EVENT.scanner(data, pos).match, None):
        items += _CHILDREN[found.lastindex]
        if items > max_items:
            raise ScanError(f"more than {max_items} items")
        todo -= 1
        if not todo:
            break
    return (pos if found is None else found.end()), todo, items


def _refusal(major: int, info: int, pos: int) -> str:
    if major == 6:
        return f"a tag at byte {pos} is not allowed"
    if info == 31:
        return f"an indefinite length (or break) at byte {pos} is not allowed"
    return f"reserved additional information {info} at byte {pos}"


__all__ = ["MAX_DEPTH", "MAX_ITEMS", "ScanError", "scan", "scan_proving"]
