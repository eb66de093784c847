"""Engine death and poison jobs, done for real: the test is the chaos agent. It kills a
worker's vLLM engine core (kill -9 of that child process); the worker must notice, stop
taking work, hand back what it held and exit 70 for its supervisor (here: the test) to
restart it. A job that kills every engine it runs in ends `failed` and dead-lettered after
GENQ_MAX_ATTEMPTS attempts, while every other job succeeds."""

from __future__ import annotations

import functools
import os
import signal
import time
import uuid
from typing import Any

from genq import names
from genq.local import WorkerProcess, wait_for
from genq.schema import JobSpec, JobState
from genq.store import new_record_fields
from producers import Client
from producers.chaos import worker_info
from producers.dead import list_dead
from producers.queues import purge_model
from producers.reliability import audit
from tests.integration.damage import (
    JOBS,
    assert_all_succeeded_once,
    submit_batch,
    wait_until_running,
)

EXIT_ENGINE_DEAD = 70  # workers/app.py; a test of the product must not import workers/
MAX_ATTEMPTS = 3
ENV = {"GENQ_LEASE_SECONDS": "3", "GENQ_GRACE_PERIOD": "20", "GENQ_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}


def running_on(client: Client, job_id: str, hostname: str) -> bool:
    record = client.status(job_id)
    return record.state is JobState.RUNNING and record.worker == hostname


def kill_engine(client: Client, model: str, worker: WorkerProcess) -> None:
    """kill -9 the worker's engine core, found from the worker's heartbeat."""
    info = worker_info(client, worker.hostname)
    assert info is not None and info.engine_pid is not None and info.model == model
    assert info.pid == (worker.proc and worker.proc.pid)
    os.kill(info.engine_pid, signal.SIGKILL)


def exits_70_holding_nothing(client: Client, ids: list[str], worker: WorkerProcess) -> None:
    assert worker.proc is not None
    code = worker.proc.wait(120)
    assert code == EXIT_ENGINE_DEAD, worker.tail()
    # It handed back what it ran: nothing is left `running` on it for a reaper to find.
    left = [
        r.id
        for r in client.status_many(ids)
        if r.state is JobState.RUNNING and r.worker == worker.hostname
    ]
    assert not left, f"{len(left)} jobs left running on a worker whose engine died"
    worker.stop()  # collects its log and anything left of its process group


def test_engine_death_hands_back_and_exits_70(make_worker: Any) -> None:
    model = f"engine-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model])
    try:
        ids = submit_batch(client, model, max_tokens=32)
        victim = make_worker(model_name=model, max_num_seqs=8, env=ENV, name="engine")
        wait_until_running(client, ids, victim, timeout=300)
        kill_engine(client, model, victim)
        exits_70_holding_nothing(client, ids, victim)
        handed_back = [
            r.id for r in client.status_many(ids) if r.state is JobState.QUEUED and r.attempts >= 1
        ]
        assert handed_back, "the worker handed nothing back"
        survivor = make_worker(model_name=model, max_num_seqs=8, env=ENV, name="survivor")
        records = client.wait_many(ids, timeout=600)
        survivor.stop()
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()
    line = audit(client.settings.redis_url, client.settings, ids, records)
    print(f"engine death: {line}")
    assert_all_succeeded_once(line)
    by_id = {r.id: r for r in records}
    assert all(by_id[i].attempts == 2 for i in handed_back)


def test_poison_job_is_failed_and_dead_lettered_after_max_attempts(make_worker: Any) -> None:
    model = f"poison-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model])
    try:
        ids = submit_batch(client, model, max_tokens=32)
        # Urgent and long (seconds, on a context of 2048): it starts early, and it is still
        # running when the agent, which polls its record, kills the engine under it.
        poison = client.submit("poison", model=model, priority=9, max_tokens=2000, ignore_eos=True)
        attempts_after_death = []
        for death in range(1, MAX_ATTEMPTS + 1):
            # A lease of 3 s could run out while a loaded machine's dying worker records
            # the failure, and the reaper's "lease expired" would be the error; the worker's
            # own account is what is tested here.
            worker = make_worker(
                model_name=model,
                max_num_seqs=8,
                env={**ENV, "GENQ_LEASE_SECONDS": "20"},
                max_model_len=2048,
                name=f"poisoned{death}",
            )
            wait_for(
                functools.partial(running_on, client, poison, worker.hostname),
                timeout=300,
                what=f"the poison job to run (attempt {death})",
            )
            kill_engine(client, model, worker)
            exits_70_holding_nothing(client, [*ids, poison], worker)
            record = client.status(poison)
            attempts_after_death.append(record.attempts)
            # Handed back to run again, until its last attempt: then failed for good.
            expected = JobState.FAILED if death == MAX_ATTEMPTS else JobState.QUEUED
            assert record.state is expected, record
        survivor = make_worker(model_name=model, max_num_seqs=8, env=ENV, name="survivor")
        records = client.wait_many([*ids, poison], timeout=600)
        survivor.stop()
        dead = [d for d in list_dead(client, model) if d.job_id == poison]
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()
    line = audit(
        client.settings.redis_url,
        client.settings,
        [*ids, poison],
        records,
        classify={poison: "poison"},
    )
    print(f"poison: {line}")
    assert str(line) == (
        f"accepted={JOBS + 1} succeeded={JOBS} failed=1(poison) lost=0 duplicated=0"
    )
    assert attempts_after_death == [1, 2, 3]
    failed = records[-1]
    assert failed.error == f"the engine died while running it {MAX_ATTEMPTS} times"
    assert [(d.reason, d.attempts) for d in dead] == [(failed.error, MAX_ATTEMPTS)]
    # The jobs that shared an engine with it when it died ran again and succeeded; none of
    # them was blamed more than once (a crash suspect never shares the engine with another).
    assert all(r.attempts <= 2 for r in records[:-1])


def a_job_whose_worker_died(client: Client, model: str, *, attempts: int) -> str:
    """Leave in Redis what a worker killed mid-job leaves: the job `running` on it, under a
    lease that has expired, its message acked long ago."""
    job_id = uuid.uuid4().hex
    spec = JobSpec(model=model, prompt="orphan", max_tokens=4)
    fields = new_record_fields(
        spec, job_id=job_id, tenant="default", enqueued_at=time.time(), deadline_at=None
    )
    fields.update(state=JobState.RUNNING.value, worker="gone@nowhere", attempts=str(attempts))
    client.store.create([fields])
    client.store.redis.zadd(names.LEASES, {job_id: time.time() - 1})
    return job_id


def test_the_reaper_counts_attempts_and_gives_up_at_the_last(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    again = a_job_whose_worker_died(client, model_name, attempts=1)
    last = a_job_whose_worker_died(client, model_name, attempts=MAX_ATTEMPTS)
    # The session worker's reaper finds both (GENQ_MAX_ATTEMPTS is 3 by default).
    redone = client.result(again, timeout=120)
    assert redone.state is JobState.SUCCEEDED and redone.attempts == 2
    given_up = client.result(last, timeout=120)
    assert given_up.state is JobState.FAILED and given_up.attempts == MAX_ATTEMPTS
    assert given_up.error == (
        f"its lease expired on attempt {MAX_ATTEMPTS} of {MAX_ATTEMPTS} "
        "(its worker died or hung while running it)"
    )
    dead = wait_for(
        lambda: [d for d in list_dead(client, model_name) if d.job_id == last],
        timeout=30,
        what="the dead letter",
    )
    assert (dead[0].reason, dead[0].attempts) == (given_up.error, MAX_ATTEMPTS)
