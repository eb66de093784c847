"""Redis restarted mid-run, for real: a private redis-server with AOF (as deploy/redis.conf
configures) is stopped while a worker runs jobs from it, then started again on the same
directory. Records and results survive, the worker and the client reconnect by themselves,
what was in flight is finished or redone, and every job ends once with one result."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from genq.local import WorkerProcess, wait_for
from genq.schema import JobRecord, JobState
from producers import Client
from producers.queues import purge_model
from producers.reliability import audit
from tests.integration.private_redis import PrivateRedis

# Leases shorter than the outage: running jobs' leases expire while Redis is away, so the
# reaper republishes jobs that are still running, and "first result wins" is what keeps
# each to one result.
FAST_LEASES = {"GENQ_LEASE_SECONDS": "3", "GENQ_GRACE_PERIOD": "20"}
HALF = 150  # submitted before the restart, and as many after it: 300 in all


def jobs(model: str, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "prompt": f"{tag} job {i}",
            "priority": i % 10,
            "max_tokens": 48,
            "ignore_eos": True,
        }
        for i in range(HALF)
    ]


def worker_saw_redis_down(worker: WorkerProcess) -> bool:
    """The worker's own log says its lease renewal failed, and its heartbeat (one a second)
    failed more times than a lease lasts: the running jobs' leases expired in the outage."""
    log = worker.log_path.read_text(errors="replace")
    beats = log.count("heartbeat to Redis failed")
    lease = int(FAST_LEASES["GENQ_LEASE_SECONDS"])
    return "lease renewal / reaping failed" in log and beats > lease


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("private_redis", "how"),
    [("everysec", "shutdown"), ("always", "kill -9")],
    indirect=["private_redis"],
)
def test_redis_restart_mid_run_loses_nothing(
    make_worker: Any, private_redis: PrivateRedis, how: str
) -> None:
    model = f"redis-{uuid.uuid4().hex[:6]}"
    env = {**FAST_LEASES, "GENQ_REDIS_URL": private_redis.url}
    client = Client(models=[model], redis_url=private_redis.url)
    waiter = Client(models=[model], redis_url=private_redis.url)
    try:
        worker = make_worker(model_name=model, max_num_seqs=8, env=env, name="redis")
        first = client.submit_many(jobs(model, "before"))
        wait_for(
            lambda: (
                sum(1 for r in client.status_many(first) if r.done) >= 20
                and any(r.state is JobState.RUNNING for r in client.status_many(first))
            ),
            timeout=300,
            what="20 jobs done and more running",
        )

        # A client already waiting when Redis goes away keeps waiting through the outage.
        waited: list[list[JobRecord]] = []
        thread = threading.Thread(
            target=lambda: waited.append(waiter.wait_many(first, timeout=600)), daemon=True
        )
        thread.start()

        before = {r.id: r.text for r in client.status_many(first) if r.done}
        if how == "shutdown":
            private_redis.shutdown()
        else:
            private_redis.kill()
        wait_for(
            lambda: worker_saw_redis_down(worker),
            timeout=60,
            what="the worker to notice Redis is down",
            interval=0.2,
        )
        private_redis.start()

        # Everything stored before the restart is there, unchanged.
        after = {r.id: r for r in client.status_many(list(before))}
        assert all(after[i].done and after[i].text == text for i, text in before.items())
        # The same client writes again (records, then messages) without being rebuilt.
        second = client.submit_many(jobs(model, "after"))
        records = client.wait_many(first + second, timeout=600)
        thread.join(60)
        assert waited and all(r.done for r in waited[0]), "the waiting client gave up"
        # The worker rode it out: it was never restarted.
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        assert worker.stop() == 0
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()
        waiter.close()
    line = audit(private_redis.url, client.settings, first + second, records)
    print(f"redis restart ({how}): {line}")
    assert line.counts() == {
        "accepted": 2 * HALF,
        "succeeded": 2 * HALF,
        "failed": 0,
        "lost": 0,
        "duplicated": 0,
    }
