"""The request path end to end: client → RabbitMQ → Celery worker running vLLM → Redis."""

from __future__ import annotations

import random
import uuid
from typing import Any

import requests
from celery import Celery
from celery.result import AsyncResult

from genq import names
from genq.local import WorkerProcess, wait_for
from genq.schema import JobState
from producers import Client
from producers.queues import purge_model


def test_200_jobs_of_mixed_priorities_complete_with_exact_token_counts(
    flower: object, worker: WorkerProcess, client: Client, model_name: str
) -> None:
    rng = random.Random(7)
    requests_ = [
        {
            "model": model_name,
            "prompt": f"job {i}: " + "lorem ipsum " * rng.randint(0, 20),
            "priority": rng.randrange(10),
            "max_tokens": rng.randint(1, 24),
            "ignore_eos": True,
            "temperature": 0.8,
        }
        for i in range(200)
    ]
    ids = client.submit_many(requests_)
    assert len(set(ids)) == 200
    records = client.wait_many(ids, timeout=300)

    for request, record in zip(requests_, records, strict=True):
        assert record.state is JobState.SUCCEEDED, record.error
        assert record.usage is not None
        assert record.usage.completion_tokens == request["max_tokens"]
        assert record.usage.prompt_tokens > 0
        assert record.priority == request["priority"]
        assert record.worker == worker.hostname
        assert record.attempts == 1
        assert record.enqueued_at <= record.started_at <= record.finished_at  # type: ignore[operator]
        assert record.text is not None

    # Celery's own result API reads the same result.
    app = Celery(backend=client.settings.redis_url, broker=client.settings.broker_url)
    got = AsyncResult(ids[0], app=app).get(timeout=10)
    assert got["text"] == records[0].text
    assert got["usage"]["completion_tokens"] == requests_[0]["max_tokens"]

    # Flower lists every job, by its task ID, as succeeded on this worker.
    def flower_has_all() -> dict | None:
        tasks = requests.get(
            f"http://127.0.0.1:{flower.port}/api/tasks",  # type: ignore[attr-defined]
            params={"limit": 1000},
            timeout=5,
        ).json()
        return tasks if all(tasks.get(i, {}).get("state") == "SUCCESS" for i in ids) else None

    tasks = wait_for(flower_has_all, timeout=30, what="Flower to list all 200 jobs")
    assert tasks[ids[0]]["name"] == "genq.generate"
    assert tasks[ids[0]]["worker"] == worker.hostname


def test_chat_messages_run_through_the_models_chat_template(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    job_id = client.submit(
        model=model_name,
        max_tokens=4,
        ignore_eos=True,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    )
    record = client.result(job_id, timeout=120)
    assert record.state is JobState.SUCCEEDED, record.error
    # The template wraps each message, so the model saw more tokens than the bare contents.
    assert record.usage is not None and record.usage.prompt_tokens > 4


def test_cancel_a_queued_job_so_it_never_runs_and_abort_running_ones(make_worker: Any) -> None:
    # A worker of its own, so no other test's jobs take batch slots.
    model_name = f"cancel-{uuid.uuid4().hex[:6]}"
    # The window holds all 16 blockers at once, and a longer context makes them run for
    # seconds, so the test sees them all running together.
    worker = make_worker(
        model_name=model_name, max_num_seqs=16, max_model_len=2048, env={"GENQ_WINDOW": "16"}
    )
    client = Client(models=[model_name])
    # Fill the engine (16 slots) with long jobs, queue more behind them, cancel one queued.
    blockers = client.submit_many(
        [
            {
                "model": model_name,
                "prompt": f"block {i}",
                "priority": 9,
                "max_tokens": 2000,
                "ignore_eos": True,
            }
            for i in range(16)
        ]
    )
    wait_for(
        lambda: all(r.state is JobState.RUNNING for r in client.status_many(blockers)),
        timeout=120,
        what="the blockers to run",
    )
    queued = client.submit_many(
        [
            {"model": model_name, "prompt": f"wait {i}", "priority": 0, "max_tokens": 4}
            for i in range(30)
        ]
    )
    # Last in, and streaming: when its turn comes it enters the engine while its admission
    # is decided (the consumer's early start), and must leave no trace there.
    victim = client.submit(
        f"wait {len(queued)}", model=model_name, priority=0, max_tokens=4, stream=True
    )
    queued.append(victim)
    assert client.status(victim).state is JobState.QUEUED
    assert client.cancel(victim) == "cancelled"
    for job_id in blockers:
        assert client.cancel(job_id) in ("cancelling", "cancelled")

    records = {r.id: r for r in client.wait_many(blockers + queued, timeout=300)}
    assert records[victim].state is JobState.CANCELLED
    assert records[victim].started_at is None and records[victim].attempts == 0
    # Started early, aborted once ADMIT said cancelled; nothing of it streamed.
    assert not client.store.redis.exists(names.progress_key(victim))
    stats_key = names.worker_stats_key(worker.hostname)
    wait_for(
        lambda: int(client.store.redis.hget(stats_key, "early_aborted") or 0) >= 1,
        timeout=10,
        what="the worker's heartbeat to count the aborted early start",
    )
    for job_id in blockers:
        record = records[job_id]
        assert record.state is JobState.CANCELLED, (record.state, record.error)
        assert record.started_at is not None
    for job_id in queued[:-1]:
        assert records[job_id].state is JobState.SUCCEEDED
    # Cancelling again reports the state it ended in.
    assert client.cancel(victim) == "cancelled"
    purge_model(client.settings, model_name, delete=True)
    client.close()
