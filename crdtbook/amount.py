"""Exact decimal amounts (prices and quantities) as scaled integers.

Theory of operation
-------------------
People and scripts write amounts as decimal strings: ``"3"``, ``"12.5"``. The
core never sees a float: a string is parsed straight into an ``int`` counting
units of 10**-8 (``"12.5"`` -> ``1_250_000_000``), and formatted back the same
way. Integers compare, hash and add exactly and fast, which is what the
matching engine needs, and the wire format carries them as CBOR integers.

Rules this module keeps
-----------------------
* An amount is positive, has at most ``SCALE_DIGITS`` fractional digits and is
  at most ``MAX_WHOLE`` (10**12).
* Only plain decimal notation is accepted: no sign, exponent, spaces, ``_``,
  leading ``.`` or trailing ``.``; trailing fractional zeros are fine.
* ``format_amount(parse_amount(s))`` is the canonical spelling of ``s``.
* The fast path (plain ASCII ``digits`` or ``digits.digits`` that is in
  range) only ever accepts what the careful path accepts, with the same
  value; anything else, every refusal included, goes the careful way, so the
  messages are the careful path's.
"""

from __future__ import annotations

import re

from .dot import shown as shown_value

SCALE_DIGITS = 8
SCALE = 10**SCALE_DIGITS
MAX_WHOLE = 10**12
MAX_UNITS = MAX_WHOLE * SCALE

_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_WHOLE_DIGITS = len(str(MAX_WHOLE))
# units per step of the last fractional digit, by the number of fractional digits
_FRACTION_STEP = tuple(10 ** (SCALE_DIGITS - n) for n in range(SCALE_DIGITS + 1))
# Amounts seen lately, parsed: order flow repeats its prices (a tick grid near
# the touch) and quantities. Only valid plain str amounts go in, and the whole
# table is dropped when full, so it stays small and what it returns is exactly
# what parsing would.
_RECENT: dict[str, int] = {}
_RECENT_MAX = 4096


class AmountError(ValueError):
    """An amount string or unit count that is not a valid price or quantity."""


def parse_amount(text: object, what: str = "amount") -> int:
    """Parse a decimal string into scaled integer units, or raise AmountError."""
    # Every order carries two amounts, so the common spelling is worth a fast
    # path: str methods instead of a regex match and its groups. For an ASCII
    # string, isdigit() is exactly [0-9]+ (and false for "").
    if type(text) is str:
        units = _RECENT.get(text)
        if units is not None:
            return units
        if text.isascii():
            whole, dot, frac = text.partition(".")
            if (whole.isdigit() and len(whole) <= _WHOLE_DIGITS
                    and (frac.isdigit() and len(frac) <= SCALE_DIGITS if dot else not frac)):
                units = int(whole) * SCALE
                if frac:
                    units += int(frac) * _FRACTION_STEP[len(frac)]
                if 0 < units <= MAX_UNITS:
                    if len(_RECENT) >= _RECENT_MAX:
                        _RECENT.clear()
                    _RECENT[text] = units
                    return units
    return _parse_carefully(text, what)


def _parse_carefully(text: object, what: str) -> int:
    """The parser that explains: every refusal, with its message."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise AmountError(
            f"{what} must be a decimal string such as \"12.5\", got {type(text).__name__}"
        )
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise AmountError(f"{what} {shown_value(text)} is not a plain decimal number "
                          "such as \"12.5\"")
    whole, frac = match.group(1).lstrip("0") or "0", match.group(2) or ""
    if len(whole) > len(str(MAX_WHOLE)):  # also keeps int() away from huge digit strings
        raise AmountError(f"{what} {text[:40]!r} exceeds the maximum of {MAX_WHOLE}")
    if len(frac) > SCALE_DIGITS:
        raise AmountError(f"{what} {shown_value(text)} has more than {SCALE_DIGITS} "
                          "fractional digits")
    units = int(whole) * SCALE + int(frac.ljust(SCALE_DIGITS, "0") or "0")
    return check_units(units, what, text)


def check_units(units: object, what: str = "amount", shown: object = None) -> int:
    """Validate a scaled integer (as decoded from the wire) and return it."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise AmountError(f"{what} must be an integer count of 1e-8 units, "
                          f"got {type(units).__name__}")
    if shown is None:
        shown = units if -(10**30) < units < 10**30 else f"a {units.bit_length()}-bit integer"
    if units <= 0:
        raise AmountError(f"{what} {shown!r} must be positive")
    if units > MAX_UNITS:
        raise AmountError(f"{what} {shown!r} exceeds the maximum of {MAX_WHOLE}")
    return units


def format_amount(units: int) -> str:
    """Canonical decimal string of scaled integer units (no trailing zeros)."""
    whole, frac = divmod(units, SCALE)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:0{SCALE_DIGITS}d}".rstrip("0")
