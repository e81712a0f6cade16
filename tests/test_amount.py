import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtbook.amount import MAX_UNITS, SCALE, AmountError, format_amount, parse_amount


@pytest.mark.parametrize(
    ("text", "units"),
    [("3", 3 * SCALE), ("12.5", 1_250_000_000), ("0.00000001", 1), ("1000000000000", MAX_UNITS),
     ("7.10", 710_000_000), ("0012", 12 * SCALE)],
)
def test_parse(text, units):
    assert parse_amount(text) == units


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be positive"),
        ("0.000000000", "more than 8 fractional digits"),
        ("1e3", "not a plain decimal"),
        ("-1", "not a plain decimal"),
        ("+1", "not a plain decimal"),
        (" 1", "not a plain decimal"),
        ("1.", "not a plain decimal"),
        (".5", "not a plain decimal"),
        ("1_000", "not a plain decimal"),
        ("NaN", "not a plain decimal"),
        ("١٢", "not a plain decimal"),
        ("1000000000000.00000001", "exceeds the maximum"),
        (1.5, "must be a decimal string"),
        (3, "must be a decimal string"),
        (True, "must be a decimal string"),
        (None, "must be a decimal string"),
    ],
)
def test_reject(value, message):
    with pytest.raises(AmountError, match=message):
        parse_amount(value)


@given(st.integers(1, MAX_UNITS))
def test_format_parse_round_trip(units):
    text = format_amount(units)
    assert parse_amount(text) == units
    assert not text.endswith("0") or "." not in text


def test_format_is_canonical():
    assert format_amount(parse_amount("12.50")) == "12.5"
    assert format_amount(parse_amount("3.0")) == "3"
