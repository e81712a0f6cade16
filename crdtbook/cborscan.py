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
  message naming the field).
* Work is linear in the number of items scanned and stops at the cap: a
  refused message costs no more than ``max_items`` steps.
* Pure: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

MAX_ITEMS = 1_000_000
MAX_DEPTH = 16


class ScanError(ValueError):
    """CBOR this node does not decode: the message says what and where."""


_WIDTH = {24: 1, 25: 2, 26: 4, 27: 8}
_LONG = -1  # a string, array or map whose length follows the initial byte
_CONTAINER = -2  # an array or map of fewer than 24 entries
_REFUSED = -3  # a tag, an indefinite length, a reserved or break byte
_SHORT = -4  # a string of 24..255 bytes (its length in one byte): replica ids, bodies


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


def scan(data: bytes | bytearray | memoryview, max_items: int = MAX_ITEMS,
         max_depth: int = MAX_DEPTH) -> int:
    """Check ``data`` holds exactly one CBOR item within the caps; return its item count."""
    data = bytes(data) if not isinstance(data, bytes) else data
    end = len(data)
    size = _SIZE
    pos = 0
    items = 1
    stack: list[int] = []  # children still to read of each open array or map
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
            if not stack:
                break
            todo = stack.pop()
    except IndexError:
        raise ScanError(f"truncated at byte {end}") from None
    if pos > end:
        raise ScanError(f"truncated at byte {end}")
    if pos != end:
        raise ScanError(f"{end - pos} trailing bytes after the message")
    return items


def _refusal(major: int, info: int, pos: int) -> str:
    if major == 6:
        return f"a tag at byte {pos} is not allowed"
    if info == 31:
        return f"an indefinite length (or break) at byte {pos} is not allowed"
    return f"reserved additional information {info} at byte {pos}"


__all__ = ["MAX_DEPTH", "MAX_ITEMS", "ScanError", "scan"]
