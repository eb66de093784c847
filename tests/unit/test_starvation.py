"""The starvation bound: the audit helper on hand-made records, then on simulated servers.

The simulated server admits one job every `interval` seconds from a fixed arrival stream
and sees every job that has arrived (one worker, the window unbounded): the case where the
bound must hold exactly."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import AdmissionQueue, Candidate, Start, create_admission_queue
from scheduler import overtakings_past_bound as audit

ALPHA, BETA = 1.0, 1 / 30  # 30 s per level
# Examples run whole simulations: no per-example deadline, a loaded machine is no failure.
SIMULATION = settings(deadline=None)


# -- the audit on hand-made records --------------------------------------------------------


def test_nothing_to_audit() -> None:
    assert audit([], alpha=ALPHA, beta=BETA) == 0


def test_a_higher_job_overtaking_within_the_bound_is_fine() -> None:
    # j is one level up and arrived 20 s after i: within the 30 s the level is worth.
    starts = [("i", 0, 0.0, 100.0), ("j", 1, 20.0, 50.0)]
    assert audit(starts, alpha=ALPHA, beta=BETA) == 0


def test_a_higher_job_overtaking_past_the_bound_counts_once() -> None:
    # j is one level up but arrived 40 s after i: i had outscored it for 10 s.
    starts = [("i", 0, 0.0, 100.0), ("j", 1, 40.0, 50.0)]
    assert audit(starts, alpha=ALPHA, beta=BETA) == 1
    assert audit([Start(*s) for s in starts], alpha=ALPHA, beta=BETA) == 1
    assert audit(starts, alpha=ALPHA, beta=BETA, slack=15.0) == 0  # 40 ≤ 30 + 15


def test_exactly_at_the_bound_is_not_past_it() -> None:
    starts = [("i", 0, 0.0, 100.0), ("j", 1, 30.0, 50.0)]
    assert audit(starts, alpha=ALPHA, beta=BETA) == 0


def test_a_later_job_of_the_same_level_first_counts() -> None:
    assert audit([("i", 3, 0.0, 10.0), ("j", 3, 1.0, 5.0)], alpha=ALPHA, beta=BETA) == 1


def test_a_lower_job_first_counts_only_if_the_higher_one_was_waiting() -> None:
    # j (level 0, enqueued at 0) vs i (level 5, enqueued at 100).
    before_i_arrived = [("i", 5, 100.0, 200.0), ("j", 0, 0.0, 50.0)]
    assert audit(before_i_arrived, alpha=ALPHA, beta=BETA) == 0
    # At 150, i scores 5 + 50/30 and j only 0 + 150/30: j should have waited.
    while_i_waited = [("i", 5, 100.0, 200.0), ("j", 0, 0.0, 150.0)]
    assert audit(while_i_waited, alpha=ALPHA, beta=BETA) == 1
    # j had waited 270 s more than i, the full 5 levels' worth (150 s) and then some.
    long_waiter = [("i", 5, 300.0, 400.0), ("j", 0, 0.0, 350.0)]
    assert audit(long_waiter, alpha=ALPHA, beta=BETA) == 0


def test_a_job_still_in_transit_is_not_counted_as_waiting() -> None:
    # i (level 9) was published 10 ms before j (level 0) started: on its way, not seen.
    pair = [("i", 9, 100.00, 100.05), ("j", 0, 99.0, 100.01)]
    assert audit(pair, alpha=ALPHA, beta=BETA) == 1
    assert audit(pair, alpha=ALPHA, beta=BETA, in_transit=0.1) == 0
    assert audit(pair, alpha=ALPHA, beta=BETA, in_transit=0.005) == 1
    with pytest.raises(ValueError, match="in_transit"):
        audit(pair, alpha=ALPHA, beta=BETA, in_transit=-1)


def test_jobs_started_at_the_same_instant_do_not_overtake_each_other() -> None:
    starts = [("i", 0, 0.0, 50.0), ("j", 0, 10.0, 50.0), ("k", 0, 20.0, 50.0)]
    assert audit(starts, alpha=ALPHA, beta=BETA) == 0


def test_a_job_still_waiting_is_overtaken_by_everything_after_it() -> None:
    starts = [("i", 0, 0.0, None), ("k", 9, 2.0, 5.0), ("j", 0, 1.0, 6.0)]
    # j (same level, later) counts; k (9 levels up, 2 s later) is within its 270 s.
    assert audit(starts, alpha=ALPHA, beta=BETA) == 1


def test_counts_every_overtaken_job() -> None:
    waiting = [(f"i{n}", 0, float(n), 1000.0 + n) for n in range(5)]
    assert audit([*waiting, ("j", 0, 500.0, 600.0)], alpha=ALPHA, beta=BETA) == 5


def test_beta_must_be_positive() -> None:
    with pytest.raises(ValueError):
        audit([], alpha=ALPHA, beta=0.0)


records = st.lists(
    st.tuples(st.integers(0, 9), st.integers(0, 1000), st.none() | st.integers(0, 600)),
    max_size=40,
)


@SIMULATION
@given(
    records,
    st.sampled_from([(1.0, 1 / 30), (2.0, 0.5), (1.0, 1.0)]),
    st.sampled_from([0.0, 7.0, 60.0]),
    st.sampled_from([0.0, 1.0, 25.0]),
)
def test_the_sweep_counts_what_checking_every_pair_counts(
    raw: list[tuple[int, int, int | None]],
    weights: tuple[float, float],
    slack: float,
    in_transit: float,
) -> None:
    alpha, beta = weights
    # started = enqueued + delay, so no job starts before it arrives.
    starts = [
        (str(n), p, float(t), None if d is None else float(t + d))
        for n, (p, t, d) in enumerate(raw)
    ]
    expected = sum(
        1
        for _, p_i, t_i, s_i in starts
        for _, p_j, t_j, s_j in starts
        if s_j is not None
        and (s_i is None or s_j < s_i)
        and t_i + in_transit <= s_j
        and t_j - t_i > alpha / beta * (p_j - p_i) + slack
    )
    assert audit(starts, alpha=alpha, beta=beta, slack=slack, in_transit=in_transit) == expected


# -- simulated servers ---------------------------------------------------------------------

# A fixed arrival stream: (gap before this arrival, level, tenant, admission cost).
arrivals = st.lists(
    st.tuples(st.floats(0, 120), st.integers(0, 9), st.integers(0, 3), st.integers(1, 500)),
    min_size=1,
    max_size=80,
)


def _serve(
    queue: AdmissionQueue,
    stream: list[tuple[float, int, int, int]],
    interval: float,
    *,
    output: int = 0,
) -> list[Start]:
    """Admit one job every `interval` seconds (idle ticks skipped); charge `output` tokens
    to a job's tenant when the next one is admitted, as a worker would at its end."""
    pending: list[Candidate[None]] = []
    t = 0.0
    for n, (gap, level, tenant, cost) in enumerate(stream):
        t += gap
        pending.append(
            Candidate(job_id=str(n), priority=level, enqueued_at=t, tenant=f"t{tenant}", cost=cost)
        )
    starts: list[Start] = []
    tick, n = interval, 0
    while n < len(pending) or len(queue):
        if not len(queue) and pending[n].enqueued_at > tick:  # idle until the next arrival
            tick += math.ceil((pending[n].enqueued_at - tick) / interval) * interval
        while n < len(pending) and pending[n].enqueued_at <= tick:
            queue.add(pending[n])
            n += 1
        if starts:
            queue.charge(f"t{stream[int(starts[-1].job_id)][2]}", output)
        chosen = queue.pop()
        starts.append(Start(chosen.job_id, chosen.priority, chosen.enqueued_at, tick))
        tick += interval
    return starts


@SIMULATION
@given(arrivals, st.floats(0.5, 120))
def test_score_never_overtakes_past_the_bound(
    stream: list[tuple[float, int, int, int]], interval: float
) -> None:
    queue = create_admission_queue("score", alpha=ALPHA, beta=BETA)
    assert audit(_serve(queue, stream, interval), alpha=ALPHA, beta=BETA) == 0


@SIMULATION
@given(arrivals, st.floats(0.5, 120), st.sampled_from([0.0, 1.0, 2.0, 5.0]), st.integers(0, 2000))
def test_fair_never_overtakes_past_the_bound_plus_its_band(
    stream: list[tuple[float, int, int, int]], interval: float, levels: float, output: int
) -> None:
    queue = create_admission_queue("fair", alpha=ALPHA, beta=BETA, fair_levels=levels)
    starts = _serve(queue, stream, interval, output=output)
    assert audit(starts, alpha=ALPHA, beta=BETA, slack=levels * ALPHA / BETA) == 0


def test_fcfs_ignores_priority_and_the_audit_says_so() -> None:
    # A level-0 job enqueued 1 s before a level-9 one goes first under fcfs: one inversion.
    stream = [(0.0, 0, 0, 1), (1.0, 9, 0, 1)]
    fcfs = create_admission_queue("fcfs", alpha=ALPHA, beta=BETA)
    assert audit(_serve(fcfs, stream, 2.0), alpha=ALPHA, beta=BETA) == 1
    score = create_admission_queue("score", alpha=ALPHA, beta=BETA)
    assert audit(_serve(score, stream, 2.0), alpha=ALPHA, beta=BETA) == 0
