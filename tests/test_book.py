"""BookSide keeps its price list sorted whether it is a plain list or a SortedList.

A side switches representation as it grows past ``FLAT_LEVELS`` levels and
back once it shrinks to half: a small threshold here makes the switches
happen often, and a model (a plain set of prices) says what must hold.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedList

from crdtbook import book
from crdtbook.book import BookSide, Resting


@pytest.fixture
def monkeypatch_flat(monkeypatch):
    """Switch representation past 4 levels (the fixture is the same for every example)."""
    monkeypatch.setattr(book, "FLAT_LEVELS", 4)


operations = st.lists(st.tuples(st.sampled_from(("add", "pop", "drop_best")),
                                st.integers(1, 40)), max_size=300)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, is_bid=st.booleans())
def test_book_side_matches_a_model_across_representations(ops, is_bid, monkeypatch_flat):
    side = BookSide(is_bid)
    model: dict[int, int] = {}  # price -> orders resting there
    switched = set()
    deepest = 0
    for op, price in ops:
        if op == "drop_best" and model:  # the matcher emptied the best level
            del model[max(model) if is_bid else min(model)]
            side.drop_best()
        elif op == "add" or price not in model:
            side.append(price, Resting.of(None, 0))
            model[price] = model.get(price, 0) + 1
        else:
            side.pop_tail(price)
            model[price] -= 1
            if not model[price]:
                del model[price]
        switched.add(type(side.prices))
        deepest = max(deepest, len(model))
        assert list(side.prices) == sorted(model)
        assert side.best == ((max(model) if is_bid else min(model)) if model else None)
        assert [level.price for level in side.depth()] == sorted(model, reverse=is_bid)
    if deepest > book.FLAT_LEVELS:
        assert SortedList in switched


def test_a_deep_side_becomes_a_sorted_list_and_shrinks_back(monkeypatch_flat):
    side = BookSide(is_bid=False)
    for price in range(1, 12):
        side.append(price, Resting.of(None, 0))
    assert isinstance(side.prices, SortedList)
    for price in range(1, 10):
        side.pop_tail(price)
    assert type(side.prices) is list and side.prices == [10, 11] and side.best == 10
