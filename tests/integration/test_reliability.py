"""Damage done for real: workers killed with SIGKILL mid-run and stopped with SIGTERM. Every
accepted job ends exactly once with one stored result."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pika.exceptions

from genq import names
from genq.local import wait_for
from genq.schema import JobState
from producers import Client
from producers.queues import purge_model
from producers.reliability import audit
from tests.integration.damage import assert_all_succeeded_once, submit_batch, wait_until_running

# Short leases so a dead worker's jobs come back within seconds, not half a minute.
FAST_LEASES = {"GENQ_LEASE_SECONDS": "3", "GENQ_GRACE_PERIOD": "20"}


def queue_exists(broker_url: str, queue: str) -> bool:
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:  # 404: no such queue
        return False
    finally:
        conn.close()


def test_kill_9_twice_during_a_run_loses_nothing(make_worker: Any) -> None:
    model = f"chaos-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model])
    try:
        ids = submit_batch(client, model, max_tokens=48)
        for round_ in range(2):
            victim = make_worker(
                model_name=model, max_num_seqs=8, env=FAST_LEASES, name=f"victim{round_}"
            )
            # Kill while it holds running and unstarted jobs.
            wait_until_running(client, ids, victim, timeout=120)
            victim.kill()
        # The next worker's reaper republishes what the dead ones held.
        last = make_worker(model_name=model, max_num_seqs=8, env=FAST_LEASES, name="last")
        records = client.wait_many(ids, timeout=600)
        last.stop()
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()
    line = audit(client.settings.redis_url, client.settings, ids, records)
    print(line)
    assert_all_succeeded_once(line)
    retried = [r for r in records if r.attempts > 1]
    assert retried, "no job was running on a killed worker: the test did no damage"
    # A job that came back kept its original enqueue time (so its age and score).
    assert all(r.enqueued_at <= (r.started_at or 0) for r in retried)


def test_sigterm_finishes_or_hands_back_everything(make_worker: Any) -> None:
    model = f"term-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model])
    try:
        ids = submit_batch(client, model, max_tokens=48)
        worker = make_worker(model_name=model, max_num_seqs=8, env=FAST_LEASES, name="term")
        wait_for(
            lambda: sum(1 for r in client.status_many(ids) if r.done) >= 30,
            timeout=120,
            what="30 jobs done",
        )
        assert worker.stop() == 0  # SIGTERM: warm shutdown, exit 0
        after_stop = client.status_many(ids)
        assert not any(r.state is JobState.RUNNING for r in after_stop), (
            "a job was left running by a gracefully stopped worker"
        )
        assert not queue_exists(client.settings.broker_url, names.idle_queue(worker.hostname)), (
            "the stopped worker left its Celery queue behind"
        )
        again = make_worker(model_name=model, max_num_seqs=8, env=FAST_LEASES, name="term2")
        records = client.wait_many(ids, timeout=600)
        again.stop()
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()
    line = audit(client.settings.redis_url, client.settings, ids, records)
    print(line)
    assert_all_succeeded_once(line)
