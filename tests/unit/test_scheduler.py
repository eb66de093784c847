"""The score, its static key, and the admission queue (pure logic, property-tested)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import Candidate, create_admission_queue, score, starvation_bound, static_key

ALPHA, BETA = 1.0, 1 / 30

jobs = st.lists(
    st.tuples(st.integers(0, 9), st.floats(0, 10_000, allow_nan=False)),
    min_size=1, max_size=60,
)


@given(jobs, st.floats(10_000, 20_000))
def test_static_key_orders_exactly_as_the_score_at_any_time(
    pairs: list[tuple[int, float]], now: float
) -> None:
    by_key = sorted(pairs, key=lambda j: static_key(j[0], j[1], alpha=ALPHA, beta=BETA))
    scores = [score(p, t, now, alpha=ALPHA, beta=BETA) for p, t in by_key]
    assert all(a <= b + 1e-6 for a, b in zip(scores, scores[1:]))


@given(jobs, st.lists(st.integers(0, 59), max_size=20))
def test_every_pop_is_the_best_scored_visible_job(
    pairs: list[tuple[int, float]], removals: list[int]
) -> None:
    queue = create_admission_queue("score", alpha=ALPHA, beta=BETA)
    visible = {}
    for i, (p, t) in enumerate(pairs):
        candidate = Candidate(job_id=str(i), priority=p, enqueued_at=t)
        queue.add(candidate)
        visible[str(i)] = candidate
    for r in removals:
        if queue.remove(str(r)) is not None:
            del visible[str(r)]
    now = 20_000.0
    while visible:
        chosen = queue.pop()
        best = max(score(c.priority, c.enqueued_at, now, alpha=ALPHA, beta=BETA)
                   for c in visible.values())
        assert score(chosen.priority, chosen.enqueued_at, now, alpha=ALPHA, beta=BETA) \
            == pytest.approx(best)
        del visible[chosen.job_id]
    assert len(queue) == 0


def test_a_low_job_overtakes_fresh_high_work_after_the_bound() -> None:
    bound = starvation_bound(9, alpha=ALPHA, beta=BETA)
    assert bound == pytest.approx(270.0)
    queue = create_admission_queue("score", alpha=ALPHA, beta=BETA)
    queue.add(Candidate(job_id="old-low", priority=0, enqueued_at=0.0))
    queue.add(Candidate(job_id="new-high", priority=9, enqueued_at=bound + 1))
    assert queue.pop().job_id == "old-low"
    queue.add(Candidate(job_id="old-low2", priority=0, enqueued_at=0.0))
    queue.add(Candidate(job_id="fresh-high", priority=9, enqueued_at=bound - 1))
    assert queue.pop().job_id == "fresh-high"


def test_fcfs_ignores_priority() -> None:
    queue = create_admission_queue("fcfs", alpha=ALPHA, beta=BETA)
    queue.add(Candidate(job_id="b", priority=9, enqueued_at=2.0))
    queue.add(Candidate(job_id="a", priority=0, enqueued_at=1.0))
    assert [queue.pop().job_id, queue.pop().job_id] == ["a", "b"]


def test_a_duplicate_is_held_once_and_an_empty_queue_says_so() -> None:
    queue = create_admission_queue("score", alpha=ALPHA, beta=BETA)
    queue.add(Candidate(job_id="x", priority=1, enqueued_at=1.0))
    queue.add(Candidate(job_id="x", priority=1, enqueued_at=1.0))
    assert len(queue) == 1
    queue.pop()
    with pytest.raises(IndexError):
        queue.peek()


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        create_admission_queue("lottery", alpha=ALPHA, beta=BETA)
