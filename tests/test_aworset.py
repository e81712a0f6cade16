"""AWORSet: join laws on random states, and agreement with a simple model."""

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtbook.aworset import AWORSet

REPLICAS = ("a", "b", "c")

# An op: (replica, "add", value) or (replica, "remove", value) or (replica, "sync", other)
ops = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(("add", "add", "remove", "sync")),
        st.integers(0, 4),
    ),
    max_size=25,
)


def run(op_list):
    """Play ops on three replicas; return (states, every delta produced)."""
    states = [AWORSet() for _ in REPLICAS]
    deltas = []
    for who, kind, arg in op_list:
        state = states[who]
        if kind == "add":
            deltas.append(state.add(REPLICAS[who], arg))
        elif kind == "remove":
            deltas.append(state.remove(arg))
        else:
            state.merge(states[arg % 3])
    return states, deltas


@settings(max_examples=150)
@given(ops)
def test_join_laws(op_list):
    (a, b, c), deltas = run(op_list)
    assert a.join(b) == b.join(a)
    assert a.join(b).join(c) == a.join(b.join(c))
    assert a.join(a) == a
    for d in deltas:
        assert a.join(d).join(d) == a.join(d)
        assert a.join(d).join(b) == a.join(b).join(d)


@settings(max_examples=150)
@given(ops, st.randoms(use_true_random=False))
def test_deltas_in_any_order_equal_full_state_join(op_list, rnd):
    states, deltas = run(op_list)
    full = AWORSet()
    for s in states:
        full.merge(s)
    shuffled = AWORSet()
    order = deltas + deltas[: len(deltas) // 2]
    rnd.shuffle(order)
    for d in order:
        shuffled.merge(d)
    # Deltas carry every add and remove, so their join equals the join of states.
    assert shuffled == full


@settings(max_examples=150)
@given(ops)
def test_observed_remove_model(op_list):
    """Sequential single-replica model: a value is present iff added and not removed since."""
    state = AWORSet()
    model: set = set()
    for _, kind, value in op_list:
        if kind == "add":
            state.add("a", value)
            model.add(value)
        elif kind == "remove":
            state.remove(value)
            model.discard(value)
    assert set(state.values()) == model


def test_add_wins_over_concurrent_remove():
    a, b = AWORSet(), AWORSet()
    a.merge(a.add("a", "x"))
    b.merge(a)
    removal = b.remove("x")  # b removes the x it saw
    re_add = a.add("a", "x")  # concurrently a adds x again
    a.merge(removal)
    b.merge(re_add)
    assert a.values() == b.values() == ["x"]


def test_removed_entry_never_comes_back():
    a, b = AWORSet(), AWORSet()
    delta = a.add("a", "x")
    b.merge(delta)
    a.remove("x")
    a.merge(delta)  # the old add delivered again
    a.merge(b)  # and the whole of a state that still has it
    assert a.values() == []


def test_missing_sends_exactly_what_is_lacking():
    a, b = AWORSet(), AWORSet()
    for v in range(5):
        a.add("a", v)
    b.merge(a.missing(b.context))
    assert b == a
    assert len(a.missing(b.context)) == 0 and a.missing(b.context).context.size() == 0
    a.add("a", 99)
    gap = a.missing(b.context)
    assert [v for _, _, v in gap.entries()] == [99]
    assert gap.context.size() == 1


def test_conflicting_values_for_one_dot_converge_to_the_smaller():
    a = AWORSet.from_entries([("z", 1, "beta")])
    b = AWORSet.from_entries([("z", 1, "alpha")])
    ab, ba = a.join(b), b.join(a)
    assert ab == ba and ab.values() == ["alpha"]


def test_missing_in_pages_adds_up_to_the_whole():
    a = AWORSet()
    for v in range(7):
        a.add("a", v)
        a.add("b", v)
    b = AWORSet()
    pages = 0
    while True:
        page = a.missing(b.context, limit=3)
        if not len(page):
            break
        assert len(page) <= 3 and page.context.size() == len(page)
        b.merge(page)
        pages += 1
    assert b == a and pages == 5


@settings(max_examples=150)
@given(ops)
def test_adopt_is_merge_into_nothing(op_list):
    """``adopt`` (a replay into a new replica) against ``merge`` into an empty state:
    the same store and context, and the values of the triples ``merge`` reports."""
    states, deltas = run(op_list)
    for other in [*states, *deltas]:
        merged, adopted = AWORSet(), AWORSet()
        changes = merged.merge(other)
        values = adopted.adopt(other)
        assert adopted.store == merged.store and adopted.context == merged.context
        assert values == [value for _, _, value in changes.added]
        assert not changes.removed and not changes.replaced
