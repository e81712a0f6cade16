"""CausalContext against a model: a plain set of dots."""

from hypothesis import given
from hypothesis import strategies as st

from crdtbook.context import CausalContext

dots = st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 12)), max_size=30)


def covered(cc: CausalContext) -> set:
    return {tuple(d) for d in cc.dots()}


def assert_compact(cc: CausalContext) -> None:
    for replica, cloud in cc.cloud.items():
        assert cloud, "empty cloud kept"
        assert min(cloud) > cc.vv.get(replica, 0) + 1, "cloud seq not beyond a gap"
    assert all(v > 0 for v in cc.vv.values())


@given(dots)
def test_add_matches_set_model(ds):
    cc = CausalContext.from_dots(ds)
    assert covered(cc) == set(ds)
    for d in ds:
        assert cc.has(*d)
    assert_compact(cc)


@given(dots, dots)
def test_merge_is_union(a, b):
    x, y = CausalContext.from_dots(a), CausalContext.from_dots(b)
    x.merge(y)
    assert covered(x) == set(a) | set(b)
    assert_compact(x)


def test_never_claims_unseen_dots():
    cc = CausalContext.from_dots([("a", 1), ("a", 3), ("a", 5)])
    assert cc.contiguous("a") == 1
    assert not cc.has("a", 2) and not cc.has("a", 4)
    cc.add("a", 2)
    assert cc.contiguous("a") == 3
    assert cc.has("a", 5) and not cc.has("a", 4)
