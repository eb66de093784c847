"""Tenant turns (scheduler/turns.py): pure arithmetic."""

from hypothesis import given
from hypothesis import strategies as st

from scheduler.turns import expected_tokens, turn

TOP = 7


def test_a_tenant_under_one_quantum_takes_the_top_turn() -> None:
    assert turn(0, 100, TOP) == TOP
    assert turn(99.9, 100, TOP) == TOP


def test_one_turn_lower_per_doubling_down_to_zero() -> None:
    assert turn(100, 100, TOP) == TOP - 1  # 1 + 1 = 2 quanta
    assert turn(300, 100, TOP) == TOP - 2  # 4
    assert turn(700, 100, TOP) == TOP - 3  # 8
    assert turn(127 * 100, 100, TOP) == 0
    assert turn(1e12, 100, TOP) == 0


@given(st.floats(0, 1e9), st.floats(0, 1e9), st.floats(1, 1e5))
def test_more_demand_never_gets_a_better_turn(a: float, b: float, quantum: float) -> None:
    low, high = sorted((a, b))
    assert 0 <= turn(high, quantum, TOP) <= turn(low, quantum, TOP) <= TOP


def test_expected_tokens_counts_about_four_characters_a_token() -> None:
    assert expected_tokens(400, 28) == 128
    assert expected_tokens(8, None) == 2
