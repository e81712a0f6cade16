"""parse_amount's fast path against the regex parser it sped up (as of 2073425).

Whatever the input, the value or the refusal (its class and message) must be
the old parser's: the fast path may only take a shortcut to the same answer.
"""

import re

from hypothesis import example, given
from hypothesis import strategies as st

from crdtbook.amount import MAX_UNITS, MAX_WHOLE, SCALE, SCALE_DIGITS, AmountError, check_units
from crdtbook.amount import parse_amount as parse_now
from crdtbook.dot import shown as shown_value

_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


def parse_before(text, what="amount"):
    """crdtbook/amount.py's parse_amount at 2073425, verbatim but for its name."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise AmountError(
            f"{what} must be a decimal string such as \"12.5\", got {type(text).__name__}"
        )
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise AmountError(f"{what} {shown_value(text)} is not a plain decimal number "
                          "such as \"12.5\"")
    whole, frac = match.group(1).lstrip("0") or "0", match.group(2) or ""
    if len(whole) > len(str(MAX_WHOLE)):
        raise AmountError(f"{what} {text[:40]!r} exceeds the maximum of {MAX_WHOLE}")
    if len(frac) > SCALE_DIGITS:
        raise AmountError(f"{what} {shown_value(text)} has more than {SCALE_DIGITS} "
                          "fractional digits")
    units = int(whole) * SCALE + int(frac.ljust(SCALE_DIGITS, "0") or "0")
    return check_units(units, what, text)


def outcome(parse, text):
    try:
        return ("ok", parse(text, "price"))
    except AmountError as exc:
        return ("refused", str(exc))


class Text(str):
    """A str subclass: not the fast path's exact type, so the careful path decides."""


# Strings near the edge: digits (ASCII and not), dots, signs, spaces, exponents.
near_numbers = st.text(alphabet="0123456789.+-e _\u0661\u00b2\uff11 ", max_size=24)
edges = st.sampled_from([
    "0", "00", "0.0", "0.00000001", "0.000000001", "1", "1.", ".1", "1..1", "1.1.1",
    "1000000000000", "1000000000000.00000001", "1000000000001", "9999999999999",
    "0000000000000000001", "00000000000001.5", "12.50000000", "12.500000000", "",
    "\u0661", "1\u00b2", "\uff11", "1e3", "-1", "+1", " 1", "1 ", "1_0", "NaN", "inf",
])


@given(st.one_of(near_numbers, edges, st.text(max_size=30),
                 st.integers(min_value=0, max_value=MAX_UNITS).map(
                     lambda u: f"{u // 10**8}.{u % 10**8:08d}".rstrip("0").rstrip("."))))
@example("1000000000000")
@example("0.00000001")
def test_fast_path_answers_as_the_old_parser(text):
    assert outcome(parse_now, text) == outcome(parse_before, text)


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=8),
                 near_numbers.map(Text)))
def test_other_types_and_subclasses_answer_as_before(value):
    assert outcome(parse_now, value) == outcome(parse_before, value)


def test_the_old_parser_copy_is_the_old_parser():
    # The copy above must itself be right, or the property proves nothing.
    assert parse_before("12.5") == 1_250_000_000
    assert parse_before("1000000000000") == MAX_UNITS
    assert outcome(parse_before, "5.")[0] == "refused"
