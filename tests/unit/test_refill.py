"""The refill wait: a job is held back only while a better one may be a round trip away."""

from __future__ import annotations

import pytest

from scheduler.refill import RefillWatch
from scheduler.score import static_key


def key(level: int, t: float) -> float:
    return static_key(level, t, alpha=1.0, beta=1 / 30)


def test_a_lower_job_waits_for_the_refill_of_a_drained_higher_level() -> None:
    watch = RefillWatch(wait=0.1)
    watch.delivered(9, key(9, 100.0))
    watch.delivered(3, key(3, 99.0))
    watch.taken(9, now=200.0)  # the level-9 job is admitted: its slot will refill
    assert watch.held_back(key(3, 99.0), now=200.01) == pytest.approx(200.1)
    watch.delivered(9, key(9, 100.5))  # the refill came
    assert watch.held_back(key(3, 99.0), now=200.02) is None


def test_a_refill_that_does_not_come_stops_holding_back() -> None:
    watch = RefillWatch(wait=0.1)
    watch.delivered(9, key(9, 100.0))
    watch.taken(9, now=200.0)
    assert watch.held_back(key(3, 99.0), now=200.05) is not None
    assert watch.held_back(key(3, 99.0), now=200.11) is None  # that queue ran dry


def test_same_level_and_better_jobs_are_never_held_back() -> None:
    watch = RefillWatch(wait=0.1)
    watch.delivered(5, key(5, 100.0))
    watch.delivered(5, key(5, 101.0))
    watch.taken(5, now=200.0)
    # Older at the same level: FIFO means the refill is newer, so worse.
    assert watch.held_back(key(5, 100.0), now=200.0) is None
    # A low job old enough to outrank the latest level-5 delivery.
    assert watch.held_back(key(3, 101.0 - 61.0), now=200.0) is None


def test_each_admission_awaits_its_own_refill() -> None:
    watch = RefillWatch(wait=0.1)
    watch.delivered(9, key(9, 100.0))
    watch.taken(9, now=200.0)
    watch.taken(9, now=200.0)
    watch.delivered(9, key(9, 100.1))
    assert watch.held_back(key(2, 99.0), now=200.01) is not None  # one more to come
    watch.delivered(9, key(9, 100.2))
    assert watch.held_back(key(2, 99.0), now=200.01) is None


def test_zero_wait_turns_it_off_and_negative_is_refused() -> None:
    watch = RefillWatch(wait=0.0)
    watch.delivered(9, key(9, 100.0))
    watch.taken(9, now=200.0)
    assert watch.held_back(key(0, 99.0), now=200.0) is None
    with pytest.raises(ValueError, match="refill wait"):
        RefillWatch(wait=-1)


def test_after_giving_back_the_next_delivery_may_be_as_good_as_what_went_back() -> None:
    watch = RefillWatch(wait=0.1)
    watch.delivered(9, key(9, 100.0))
    watch.delivered(9, key(9, 101.0))  # latest: the worse one
    watch.given_back(9, key(9, 100.0))  # both go back to the queue's head
    watch.given_back(9, key(9, 101.0))
    watch.expect(9, 2, now=200.0)  # consuming again
    # A level-9 job between the two returned ones in key must wait for them.
    assert watch.held_back(key(9, 100.5), now=200.01) is not None


def test_expect_waits_only_for_levels_that_delivered_before() -> None:
    watch = RefillWatch(wait=0.1)
    watch.delivered(5, key(5, 100.0))
    for level in range(10):
        watch.expect(level, 2, now=200.0)
    assert watch.held_back(key(3, 100.0), now=200.01) is not None  # level 5 may refill
    watch.delivered(5, key(5, 100.2))
    watch.delivered(5, key(5, 100.3))
    assert watch.held_back(key(3, 100.0), now=200.01) is None  # levels never seen: no wait
