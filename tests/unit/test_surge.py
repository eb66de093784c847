"""The surge: a second consumer per level while an engine has far more room than its windows."""

from __future__ import annotations

from scheduler.surge import surge_prefetch


def test_an_empty_engine_surges_with_its_room_shared_among_the_levels() -> None:
    assert surge_prefetch(256, levels=10, window=2, current=0) == 25


def test_a_busy_engine_freeing_a_few_slots_does_not_surge() -> None:
    # 79 free slots is under four times the 20 the windows hold.
    assert surge_prefetch(79, levels=10, window=2, current=0) == 0
    assert surge_prefetch(0, levels=10, window=2, current=0) == 0


def test_a_surge_keeps_its_prefetch_while_the_room_shrinks_then_stops() -> None:
    assert surge_prefetch(120, levels=10, window=2, current=25) == 25
    assert surge_prefetch(21, levels=10, window=2, current=25) == 25
    assert surge_prefetch(20, levels=10, window=2, current=25) == 0


def test_one_level_surges_too() -> None:
    assert surge_prefetch(256, levels=1, window=2, current=0) == 256
    assert surge_prefetch(7, levels=1, window=2, current=0) == 0
