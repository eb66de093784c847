"""Ordering with real RabbitMQ, Redis and vLLM: jobs start in score order, the starvation
bound holds, deadlines expire, and the queue position estimate reads sensibly."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis

from genq import names
from genq.local import wait_for
from genq.schema import JobRecord, JobState
from producers import Client
from producers.queues import purge_model
from scheduler import static_key
from scheduler.overtaking import Start, overtakings_past_bound

# A job climbs one level per second here, so the bound is seconds, not minutes.
ALPHA, BETA = 1.0, 1.0
SCORE_ENV = {"GENQ_ALPHA": str(ALPHA), "GENQ_BETA": str(BETA)}


def inversions_beyond_window(order: list[JobRecord], *, window: int, levels: int) -> int:
    """Jobs started while more better-scored jobs were still waiting than the worker can
    hold unseen (window per level): the inversions the window does not explain."""
    keys = [static_key(r.priority, r.enqueued_at, alpha=ALPHA, beta=BETA) for r in order]
    return sum(
        1
        for i, k in enumerate(keys)
        if sum(1 for later in keys[i + 1 :] if later > k) > window * levels
    )


def started_in_order(records: list[JobRecord]) -> list[JobRecord]:
    return sorted((r for r in records if r.started_at), key=lambda r: r.started_at or 0.0)


def test_jobs_start_in_score_order_and_an_old_low_job_overtakes_after_the_bound(
    make_worker: Any, fleet_env: dict[str, str]
) -> None:
    model = f"order-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model], alpha=ALPHA, beta=BETA)
    try:
        # Enqueued while no worker serves the model.
        old_low = client.submit("old low", model=model, priority=0, max_tokens=24, ignore_eos=True)
        expires = client.submit("too late", model=model, priority=9, max_tokens=4, deadline=1.0)
        time.sleep(3.5)  # old_low now outranks fresh level-3 work (bound: 3 s)
        batch = client.submit_many(
            [
                {
                    "model": model,
                    "prompt": f"job {level}.{i}",
                    "priority": level,
                    "max_tokens": 24,
                    "ignore_eos": True,
                }
                for i in range(6)
                for level in range(4)
            ]
        )
        client.submit("fresh top", model=model, priority=9, max_tokens=24, ignore_eos=True)

        # One job at a time, so the start order is the admission order.
        worker = make_worker(model_name=model, max_num_seqs=1, env=SCORE_ENV)
        records = client.wait_many([old_low, expires, *batch], timeout=300)
        worker.stop()
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()

    by_id = {r.id: r for r in records}
    assert by_id[expires].state is JobState.EXPIRED
    assert by_id[expires].started_at is None

    order = started_in_order([r for r in records if r.id != expires])
    # The worker admits the best job it holds, and holds `window` (2) per level: a better
    # job still in RabbitMQ behind those can be passed, nothing else.
    assert inversions_beyond_window(order, window=2, levels=10) == 0, [r.priority for r in order]
    level3_starts = [r.started_at for r in records if r.priority == 3 and r.started_at]
    assert by_id[old_low].started_at < min(level3_starts), (
        "the old level-0 job did not overtake level-3 work that arrived past the bound"
    )


def test_two_workers_share_the_order_and_an_idle_one_gets_work_at_once(
    make_worker: Any,
) -> None:
    model = f"order2-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model])
    try:
        # Each engine on a core of its own (vLLM's CPU default puts both on the same one,
        # where they take turns for seconds and order across them means nothing).
        first = make_worker(model_name=model, max_num_seqs=1, name="a", start=False, cpus="0")
        second = make_worker(model_name=model, max_num_seqs=1, name="b", start=False, cpus="1")
        for worker in (first, second):
            worker.start(wait=False)
        for worker in (first, second):
            worker.wait_ready()
        # Both ready first (their start-up can differ by tens of seconds on a loaded
        # machine: enqueued before, one would run everything alone). Then one long job for
        # each: both must be running one at once, however the two were delivered.
        ready = time.time()
        blockers = client.submit_many(
            [
                {
                    "model": model,
                    "prompt": f"blocker {i}",
                    "priority": 9,
                    "max_tokens": 400,
                    "ignore_eos": True,
                }
                for i in range(2)
            ]
        )
        wait_for(
            lambda: (
                {r.worker for r in client.status_many(blockers) if r.state is JobState.RUNNING}
                == {first.hostname, second.hostname}
            ),
            timeout=60,
            what="each worker running a blocker",
            interval=0.05,
        )
        # The batch lands in the queues while both engines are busy, so the order it starts
        # in is the scheduler's, not the order RabbitMQ happened to deliver it in (in one
        # CI run the batch's tail reached the queues seconds after its head).
        ids = client.submit_many(
            [
                {
                    "model": model,
                    "prompt": f"job {level}.{i}",
                    "priority": level,
                    "max_tokens": 64,
                    "ignore_eos": True,
                }
                for i in range(12)
                for level in range(10)
            ]
        )
        records = client.wait_many(ids, timeout=300)
        blocked = client.wait_many(blockers, timeout=60)
        first.stop()
        second.stop()
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()

    assert all(r.state is JobState.SUCCEEDED for r in [*records, *blocked])
    # The idle second worker got work at once (a worker holding two jobs it cannot start
    # gives one back within hold_seconds).
    assert all((r.started_at or 0.0) - ready < 5.0 for r in blocked)
    assert {r.worker for r in records} == {first.hostname, second.hostname}, (
        "one worker got no work"
    )
    order = started_in_order(records)
    starts = [Start(r.id, r.priority, r.enqueued_at, r.started_at) for r in records]
    print(
        "two workers, start order by level:",
        [r.priority for r in order],
        "overtakings past the bound (strict, windows not excused):",
        overtakings_past_bound(starts, alpha=1.0, beta=1 / 30),
    )
    # Each worker holds its own window, unseen by the other: a job can be passed by what
    # the other worker starts meanwhile, up to both windows' worth, and no further.
    assert inversions_beyond_window(order, window=2 * 2, levels=10) == 0, [
        r.priority for r in order
    ]


def test_status_of_a_queued_job_estimates_its_place(client: Client, fleet_env: Any) -> None:
    model = f"idle-{uuid.uuid4().hex[:6]}"
    c = Client(models=[model])
    try:
        c.submit_many([{"model": model, "prompt": "x", "priority": p} for p in (5, 5, 7, 1)])
        job = c.submit("me", model=model, priority=5)
        estimate = c.queue_estimate(c.status(job))
    finally:
        purge_model(c.settings, model, delete=True)
        c.close()
    assert estimate["level"] == 5 and estimate["estimate"] is True
    assert estimate["depth_by_level"][5] == 3 and estimate["depth_by_level"][7] == 1
    assert estimate["ahead_at_most"] == 3  # the two at level 5 and the one at level 7


def test_a_worker_stuck_on_a_long_job_gives_its_held_jobs_to_an_idle_one(
    make_worker: Any,
) -> None:
    model = f"hold-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model])
    r = redis.Redis.from_url(client.settings.redis_url, decode_responses=True)
    try:
        workers = [
            make_worker(
                model_name=model,
                max_num_seqs=1,
                max_model_len=2048,
                name=name,
                start=False,
                cpus=cpu,
                env={"GENQ_HOLD_SECONDS": "1"},
            )
            for name, cpu in (("ha", "0"), ("hb", "1"))
        ]
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()
        # One job long enough to keep its worker's only slot for seconds, then short ones of
        # every level, which both workers take into their windows.
        long_job = client.submit("long", model=model, priority=9, max_tokens=1900, ignore_eos=True)
        short = client.submit_many(
            [
                {
                    "model": model,
                    "prompt": f"short {i}",
                    "priority": i % 9,
                    "max_tokens": 8,
                    "ignore_eos": True,
                }
                for i in range(12)
            ]
        )
        wait_for(
            lambda: client.status(long_job).state is JobState.RUNNING,
            timeout=60,
            what="the long job to start",
            interval=0.05,
        )
        stuck = client.status(long_job).worker
        assert stuck is not None
        records = client.wait_many([long_job, *short], timeout=300)
        # The worker that ran the long job gave back what it held (the short jobs delivered
        # to it) instead of keeping them behind the long job; the other worker ran them, or
        # the stuck one once free if the other was slower still.
        stats = r.hgetall(names.worker_stats_key(stuck))
        for worker in workers:
            worker.stop()
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()
        r.close()
    assert int(stats.get("held_off", 0)) >= 1, stats
    assert all(rec.state is JobState.SUCCEEDED for rec in records), [rec.error for rec in records]
