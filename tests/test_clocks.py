"""Hybrid logical clocks under skewed and backward-jumping wall clocks; vectors."""

from hypothesis import given
from hypothesis import strategies as st

from selaras.engine.clocks import (
    HybridClock,
    hlc_from_ms,
    hlc_ms,
    lww_key,
    merge_vectors,
    vector_of,
)


@given(st.lists(st.tuples(st.integers(0, 2**40), st.integers(1, 70_000)), min_size=1,
                max_size=50))
def test_ticks_strictly_increase_whatever_the_wall_clock_does(readings):
    clock, last = HybridClock(), -1
    for now_ms, n in readings:
        first = clock.tick(now_ms, n)
        assert first > last
        assert clock.last == first + n - 1
        last = clock.last


def test_physical_part_follows_the_wall_clock_when_it_is_ahead():
    clock = HybridClock()
    assert hlc_ms(clock.tick(1_000)) == 1_000
    assert hlc_ms(clock.tick(5_000)) == 5_000


def test_a_clock_behind_still_orders_after_what_it_has_seen():
    fast, slow = HybridClock(), HybridClock()
    seen = fast.tick(10_000_000)  # a PC whose clock runs far ahead
    slow.observe(seen)
    mine = slow.tick(1_000)  # this PC's wall clock says much earlier
    assert mine > seen
    assert hlc_ms(mine) == hlc_ms(seen)  # only the logical counter moved


def test_a_huge_batch_carries_into_the_milliseconds_and_stays_ordered():
    clock = HybridClock()
    first = clock.tick(1_000, 200_000)
    assert clock.last - first == 199_999
    assert hlc_ms(clock.last) > 1_000
    assert clock.tick(1_000) == clock.last


def test_lww_key_orders_by_hlc_then_origin():
    a, b = "a0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002"
    assert lww_key(hlc_from_ms(2), a) > lww_key(hlc_from_ms(1), b)
    assert lww_key(hlc_from_ms(1), b) > lww_key(hlc_from_ms(1), a)


def test_vectors():
    assert merge_vectors({"a": 1, "b": 5}, {"a": 3}) == {"a": 3, "b": 5}
    assert vector_of([("a", 2), ("b", 1), ("a", 5)]) == {"a": 5, "b": 1}
