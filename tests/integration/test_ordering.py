"""Ordering with real RabbitMQ, Redis and vLLM: jobs start in score order, the starvation
bound holds, deadlines expire, and the queue position estimate reads sensibly."""

from __future__ import annotations

import time
import uuid
from typing import Any

from genq.schema import JobRecord, JobState
from producers import Client
from producers.queues import purge_model
from scheduler import overtakings_past_bound

# A job climbs one level per second here, so the bound is seconds, not minutes.
ALPHA, BETA = 1.0, 1.0
SCORE_ENV = {"GENQ_ALPHA": str(ALPHA), "GENQ_BETA": str(BETA)}


def started_in_order(records: list[JobRecord]) -> list[JobRecord]:
    return sorted((r for r in records if r.started_at), key=lambda r: r.started_at or 0.0)


def test_jobs_start_in_score_order_and_an_old_low_job_overtakes_after_the_bound(
    make_worker: Any, fleet_env: dict[str, str]
) -> None:
    model = f"order-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model], alpha=ALPHA, beta=BETA)
    try:
        # Enqueued while no worker serves the model.
        old_low = client.submit("old low", model=model, priority=0, max_tokens=24,
                                ignore_eos=True)
        expires = client.submit("too late", model=model, priority=9, max_tokens=4,
                                deadline=1.0)
        time.sleep(3.5)  # old_low now outranks fresh level-3 work (bound: 3 s)
        batch = client.submit_many([
            {"model": model, "prompt": f"job {level}.{i}", "priority": level,
             "max_tokens": 24, "ignore_eos": True}
            for i in range(6) for level in range(4)])
        client.submit("fresh top", model=model, priority=9, max_tokens=24, ignore_eos=True)

        # One job at a time, so the start order is the admission order.
        worker = make_worker(model_name=model, max_num_seqs=1, env=SCORE_ENV)
        records = client.wait_many([old_low, expires, *batch], timeout=300)
        worker.stop()
    finally:
        purge_model(client.settings.broker_url, model, client.settings.levels, delete=True)
        client.close()

    by_id = {r.id: r for r in records}
    assert by_id[expires].state is JobState.EXPIRED
    assert by_id[expires].started_at is None

    order = started_in_order([r for r in records if r.id != expires])
    # The first admission can happen before every level's head has arrived from the
    # broker; from then on the worker sees all heads and the order is exact.
    steady = order[1:]
    ids = [r.id for r in steady]
    first_level3 = min(i for i, r in enumerate(steady) if r.priority == 3)
    assert old_low in ids[: first_level3 + 1], "the old level-0 job waited past the bound"
    fresh = [r for r in steady if r.id != old_low]
    assert [r.priority for r in fresh] == sorted((r.priority for r in fresh), reverse=True)
    starts = [(r.id, r.priority, r.enqueued_at, r.started_at) for r in records
              if r.id != expires]
    assert overtakings_past_bound(starts, alpha=ALPHA, beta=BETA, slack=1.0) == 0


def test_two_workers_share_the_order_and_an_idle_one_gets_work_at_once(
    make_worker: Any,
) -> None:
    model = f"order2-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model])
    try:
        first = make_worker(model_name=model, max_num_seqs=1, name="a")
        ids = client.submit_many([
            {"model": model, "prompt": f"job {level}.{i}", "priority": level,
             "max_tokens": 32, "ignore_eos": True}
            for i in range(8) for level in range(10)])
        second = make_worker(model_name=model, max_num_seqs=1, name="b")
        records = client.wait_many(ids, timeout=300)
        first.stop()
        second.stop()
    finally:
        purge_model(client.settings.broker_url, model, client.settings.levels, delete=True)
        client.close()

    assert all(r.state is JobState.SUCCEEDED for r in records)
    workers = {r.worker for r in records}
    assert workers == {first.hostname, second.hostname}, "the second worker got no work"
    # Displacement from the ideal (score) order is bounded by what the workers hold:
    # each holds at most `window` (2) jobs per level it has not started.
    order = started_in_order(records)
    ideal = sorted(order, key=lambda r: (-r.priority, r.enqueued_at))
    rank = {r.id: i for i, r in enumerate(ideal)}
    worst = max(abs(rank[r.id] - i) for i, r in enumerate(order))
    assert worst <= 2 * 2 * 10, worst


def test_status_of_a_queued_job_estimates_its_place(client: Client, fleet_env: Any) -> None:
    model = f"idle-{uuid.uuid4().hex[:6]}"
    c = Client(models=[model])
    try:
        c.submit_many([{"model": model, "prompt": "x", "priority": p} for p in (5, 5, 7, 1)])
        job = c.submit("me", model=model, priority=5)
        estimate = c.queue_estimate(c.status(job))
    finally:
        purge_model(c.settings.broker_url, model, c.settings.levels, delete=True)
        c.close()
    assert estimate["level"] == 5 and estimate["estimate"] is True
    assert estimate["depth_by_level"][5] == 3 and estimate["depth_by_level"][7] == 1
    assert estimate["ahead_at_most"] == 3  # the two at level 5 and the one at level 7
