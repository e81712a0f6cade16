"""Hypothesis strategies for workloads (see fuzz/workload.py)."""

from __future__ import annotations

from hypothesis import strategies as st

from fuzz.workload import Step

# Honest actions dominate; each forged kind is about one step in 23 (a stale
# clock rejects the rest of its replica's events, so it must stay rare).
WEIGHTED_ACTIONS = (
    ("limit",) * 10 + ("market",) + ("ioc", "fok", "post_only") * 2 + ("cancel",) * 4
    + ("forge_cancel", "stale_clock")
)


def steps(count: int, max_size: int = 60) -> st.SearchStrategy[list[Step]]:
    step = st.builds(
        Step,
        replica=st.integers(0, count - 1),
        action=st.sampled_from(WEIGHTED_ACTIONS),
        side=st.sampled_from(("buy", "sell")),
        qty=st.integers(1, 6),
        price=st.integers(8, 12),
        deliver=st.integers(0, 3),
        dt=st.sampled_from((0, 1, 2, 7)),
    )
    return st.lists(step, min_size=1, max_size=max_size)


@st.composite
def workloads(draw, min_replicas: int = 2, max_replicas: int = 7, max_size: int = 60):
    count = draw(st.integers(min_replicas, max_replicas))
    skew = draw(st.lists(st.integers(0, 30), min_size=count, max_size=count))
    return count, draw(steps(count, max_size)), skew
