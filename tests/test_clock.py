from hypothesis import given
from hypothesis import strategies as st

from crdtbook.clock import LOGICAL_BITS, HybridClock, wall_ms


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10**13)), max_size=50))
def test_tick_strictly_increases_and_dominates_observed(ops):
    clock = HybridClock()
    last, seen = 0, 0
    for is_tick, value in ops:
        if is_tick:
            stamp = clock.tick(value)
            assert stamp > last and stamp > seen
            assert stamp >= value << LOGICAL_BITS
            last = stamp
        else:
            clock.observe(value << LOGICAL_BITS)
            seen = max(seen, value << LOGICAL_BITS)


def test_tracks_wall_time_when_idle():
    clock = HybridClock()
    assert wall_ms(clock.tick(5_000)) == 5_000
    assert wall_ms(clock.tick(9_000)) == 9_000  # jumps forward with real time
    assert clock.tick(1_000) > clock.last - 1  # a clock going backwards does not
