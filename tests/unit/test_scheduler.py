"""The score, its static key, and the admission queue (pure logic, property-tested).
The fair policy has its own file (test_scheduler_fair.py), the starvation bound too
(test_starvation.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import (
    AdmissionQueue,
    Candidate,
    Policy,
    create_admission_queue,
    score,
    starvation_bound,
    static_key,
)

ALPHA, BETA = 1.0, 1 / 30
POLICIES = [p.value for p in Policy]

# An arrival stream interleaved with admissions: (gap before this arrival, level, pops after
# it). Time only moves forward; each pop happens `step` seconds after the previous event.
streams = st.lists(
    st.tuples(st.floats(0, 120), st.integers(0, 9), st.integers(0, 3)),
    min_size=1,
    max_size=60,
)


def _interleave(
    queue: AdmissionQueue,
    stream: list[tuple[float, int, int]],
    step: float,
    check: Callable[[Candidate[Any], dict[str, Candidate[Any]], float], None],
) -> None:
    """Feed `stream` to `queue`, popping as it says (and draining at the end); `check` sees
    each chosen candidate with everything visible at that moment and the time."""
    visible: dict[str, Candidate[Any]] = {}
    now = 0.0

    def pop() -> None:
        nonlocal now
        now += step
        chosen = queue.pop()
        check(chosen, visible, now)
        del visible[chosen.job_id]

    for i, (gap, level, pops) in enumerate(stream):
        now += gap
        candidate: Candidate[None] = Candidate(
            job_id=str(i), priority=level, enqueued_at=now, tenant=str(i % 3)
        )
        queue.add(candidate)
        visible[candidate.job_id] = candidate
        for _ in range(min(pops, len(visible))):
            pop()
    while visible:
        pop()
    assert len(queue) == 0


jobs = st.lists(
    st.tuples(st.integers(0, 9), st.floats(0, 10_000, allow_nan=False)),
    min_size=1,
    max_size=60,
)


@given(jobs, st.floats(10_000, 20_000))
def test_static_key_orders_exactly_as_the_score_at_any_time(
    pairs: list[tuple[int, float]], now: float
) -> None:
    by_key = sorted(pairs, key=lambda j: static_key(j[0], j[1], alpha=ALPHA, beta=BETA))
    scores = [score(p, t, now, alpha=ALPHA, beta=BETA) for p, t in by_key]
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(scores))


@given(jobs, st.lists(st.integers(0, 59), max_size=20))
def test_every_pop_is_the_best_scored_visible_job(
    pairs: list[tuple[int, float]], removals: list[int]
) -> None:
    queue = create_admission_queue("score", alpha=ALPHA, beta=BETA)
    visible = {}
    for i, (p, t) in enumerate(pairs):
        candidate: Candidate[None] = Candidate(job_id=str(i), priority=p, enqueued_at=t)
        queue.add(candidate)
        visible[str(i)] = candidate
    for r in removals:
        if queue.remove(str(r)) is not None:
            del visible[str(r)]
    now = 20_000.0
    while visible:
        chosen = queue.pop()
        best = max(
            score(c.priority, c.enqueued_at, now, alpha=ALPHA, beta=BETA) for c in visible.values()
        )
        assert score(
            chosen.priority, chosen.enqueued_at, now, alpha=ALPHA, beta=BETA
        ) == pytest.approx(best)
        del visible[chosen.job_id]
    assert len(queue) == 0


@given(streams, st.floats(0.01, 60))
def test_every_admission_over_time_is_the_best_scored_visible_job(
    stream: list[tuple[float, int, int]], step: float
) -> None:
    def check(chosen: Candidate[Any], visible: dict[str, Candidate[Any]], now: float) -> None:
        best = max(
            score(c.priority, c.enqueued_at, now, alpha=ALPHA, beta=BETA) for c in visible.values()
        )
        assert score(
            chosen.priority, chosen.enqueued_at, now, alpha=ALPHA, beta=BETA
        ) == pytest.approx(best)

    _interleave(create_admission_queue("score", alpha=ALPHA, beta=BETA), stream, step, check)


@given(streams, st.floats(0.01, 60))
def test_fcfs_admits_in_enqueue_order(stream: list[tuple[float, int, int]], step: float) -> None:
    def check(chosen: Candidate[Any], visible: dict[str, Candidate[Any]], now: float) -> None:
        assert chosen.enqueued_at == min(c.enqueued_at for c in visible.values())

    _interleave(create_admission_queue("fcfs", alpha=ALPHA, beta=BETA), stream, step, check)


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


@pytest.mark.parametrize("policy", POLICIES)
def test_a_duplicate_is_held_once_and_an_empty_queue_says_so(policy: str) -> None:
    queue = create_admission_queue(policy, alpha=ALPHA, beta=BETA)
    queue.add(Candidate(job_id="x", priority=1, enqueued_at=1.0))
    queue.add(Candidate(job_id="x", priority=1, enqueued_at=1.0))
    assert len(queue) == 1 and "x" in queue
    queue.pop()
    assert "x" not in queue
    with pytest.raises(IndexError):
        queue.peek()
    with pytest.raises(IndexError):
        queue.pop()


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_speaks_the_whole_protocol(policy: str) -> None:
    queue = create_admission_queue(policy, alpha=ALPHA, beta=BETA)
    queue.add(Candidate(job_id="a", priority=1, enqueued_at=1.0, tenant="t"))
    queue.add(Candidate(job_id="b", priority=1, enqueued_at=2.0, tenant="u"))
    queue.charge("t", 100)  # the worker calls it whatever the policy
    assert queue.remove("nope") is None
    removed = queue.remove("a")
    assert removed is not None and removed.job_id == "a" and "a" not in queue
    assert queue.peek().job_id == "b" and len(queue) == 1
    assert queue.pop().job_id == "b" and len(queue) == 0
    queue.add(Candidate(job_id="a", priority=1, enqueued_at=1.0))  # held again after removal
    assert queue.pop().job_id == "a"


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        create_admission_queue("lottery", alpha=ALPHA, beta=BETA)
