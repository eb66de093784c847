"""Auditing an admission order after the fact: overtakings past the starvation bound.

Used by unit tests on simulated runs, by `genq bench --priority` and by integration tests on
real ones, so it takes plain records and needs nothing but the clock values they hold."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from typing import NamedTuple

from scheduler.score import static_key

__all__ = ["Start", "overtakings_past_bound"]

# Differences below a microsecond are float rounding of the keys, not an overtaking.
_EPSILON_SECONDS = 1e-6


class Start(NamedTuple):
    """One job's record for the audit. A plain 4-tuple in this order does as well."""

    job_id: str
    priority: int
    enqueued_at: float
    started_at: float | None
    """None: still waiting when the record was taken."""


def overtakings_past_bound(
    starts: Iterable[tuple[str, int, float, float | None]],
    *,
    alpha: float,
    beta: float,
    slack: float = 0.0,
    in_transit: float = 0.0,
) -> int:
    """Count the pairs (i, j) where job j started before job i although j arrived more than
    `(α/β)·(p_j − p_i) + slack` seconds after i, and i was already waiting when j started.

    `starts` holds `(job_id, priority, enqueued_at, started_at)` records (`Start` or plain
    tuples), all times on one clock; `started_at` None means still waiting, which counts as
    starting after everything that did start. Leave out jobs that expired or were cancelled:
    they never competed for a start. `slack` (seconds) absorbs known looseness: the jobs other
    workers held in their windows, or the `fair` policy's band (`fair_levels·α/β`).
    `in_transit` (seconds): a job that arrived less than this before j started was still on
    its way (publish, broker, delivery) and could not have been seen; it is not counted as
    waiting at that start.

    Under the `score` policy with every waiting job visible, the count is 0: j starts first
    only if its key α·p_j − β·t_j is at least i's, i.e. t_j − t_i ≤ (α/β)·(p_j − p_i).
    "i was already waiting" (t_i ≤ started_j) matters only when p_j ≤ p_i, where the bound
    is ≤ 0 and j may have arrived before i did; two jobs started at the same instant do not
    overtake each other.

    O(n log n) plus list insertions: a sweep over arrivals and starts in time order, holding
    the keys of the jobs waiting at each start."""
    if not beta > 0:
        raise ValueError(f"beta: must be > 0, not {beta!r}")
    if not in_transit >= 0:
        raise ValueError(f"in_transit: must be >= 0 seconds, not {in_transit!r}")
    # Events (time, kind, key): kind 0 = arrival, 1 = start; arrivals at an instant go first.
    events: list[tuple[float, int, float]] = []
    for _job_id, priority, enqueued_at, started_at in starts:
        key = static_key(priority, enqueued_at, alpha=alpha, beta=beta)
        visible_at = enqueued_at + in_transit
        if started_at is None:
            events.append((visible_at, 0, key))
        else:
            # A start recorded before the job was visible (in transit, or clock skew) still
            # finds its own arrival.
            events.append((min(visible_at, started_at), 0, key))
            events.append((started_at, 1, key))
    events.sort(key=lambda e: (e[0], e[1]))
    # k_i − k_j > β·(slack + ε) is t_j − t_i > (α/β)·(p_j − p_i) + slack + ε.
    margin = beta * (slack + _EPSILON_SECONDS)
    waiting: list[float] = []  # sorted keys of the jobs arrived and not started
    count = 0
    n = 0
    while n < len(events):
        time, kind, key = events[n]
        if kind == 0:
            insort(waiting, key)
            n += 1
            continue
        started: list[float] = []  # all starts at this instant, so none overtakes another
        while n < len(events) and events[n][0] == time and events[n][1] == 1:
            started.append(events[n][2])
            n += 1
        for key in started:
            del waiting[bisect_left(waiting, key)]
        for key in started:
            count += len(waiting) - bisect_right(waiting, key + margin)
    return count
