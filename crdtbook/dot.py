"""Dots: the unique identity of an event.

A ``Dot`` is ``(replica, seq)``: the replica that created the event and its
per-replica counter, 1, 2, 3, ... without gaps. Replica ids are short ASCII
names so that they sort the same way everywhere (code-point order) and print
cleanly as ``"replica:seq"``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_SEQ = 2**63 - 1
MAX_SEQ_DIGITS = len(str(MAX_SEQ))
MAX_REPLICA_LEN = 64
_REPLICA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def show_int(value: int) -> str:
    """An integer for an error message; huge ones by size (str() of >4300 digits raises)."""
    if -(10**30) < value < 10**30:
        return str(value)
    return f"a {value.bit_length()}-bit integer"


SHOWN = 80  # characters of a peer's or client's value quoted in an error, at most


def shown(value: object, most: int = SHOWN) -> str:
    """``repr(value)`` cut to ``most`` characters, for error messages: an echoed
    value never makes an error larger than the caps here."""
    if isinstance(value, str | bytes | bytearray) and len(value) > most:
        value = value[:most]  # repr of a 4 MB string costs 4 MB: cut first
        return repr(value)[:most] + f"... ({type(value).__name__}, truncated)"
    if type(value) is int:
        text = show_int(value)
    elif isinstance(value, list | dict | tuple | set):
        text = f"a {type(value).__name__}"
    else:
        text = repr(value)
    return text if len(text) <= most else text[:most] + "... (truncated)"


class DotError(ValueError):
    """A malformed replica id, sequence number or dot."""


class Dot(NamedTuple):
    replica: str
    seq: int

    def __str__(self) -> str:
        return f"{self.replica}:{self.seq}"


def check_replica(replica: object) -> str:
    if not isinstance(replica, str):
        raise DotError(f"replica id must be a string, got {type(replica).__name__}")
    if not 0 < len(replica) <= MAX_REPLICA_LEN or _REPLICA.fullmatch(replica) is None:
        raise DotError(
            f"replica id {replica[:80]!r} must be 1-{MAX_REPLICA_LEN} characters of "
            "letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return replica


def check_seq(seq: object, what: str = "seq") -> int:
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise DotError(f"{what} must be an integer, got {type(seq).__name__}")
    if not 0 < seq <= MAX_SEQ:
        raise DotError(f"{what} {show_int(seq)} is out of range 1..2^63-1")
    return seq


def parse_dot(text: object) -> Dot:
    """Parse ``"replica:seq"`` (the form used in the API and CLI)."""
    if not isinstance(text, str) or ":" not in text:
        raise DotError(f"order id {shown(text)} must look like 'replica:seq'")
    replica, _, seq = text.rpartition(":")
    if not seq.isdigit() or not seq.isascii():
        raise DotError(f"order id {shown(text)} must end in ':<number>'")
    if len(seq) > MAX_SEQ_DIGITS:  # int() of thousands of digits raises (and costs)
        raise DotError(f"order id {shown(text)}: seq is out of range 1..2^63-1")
    return Dot(check_replica(replica), check_seq(int(seq)))
