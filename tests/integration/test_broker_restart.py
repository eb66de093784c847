"""Damage done to the broker side for real: RabbitMQ restarted under a running worker, and a
producer's connection cut in the middle of `submit_many`. Every accepted job ends exactly
once with one stored result; a submit that was not confirmed raises and says which jobs.

The broker here is a private RabbitMQ node the tests own (private_rabbit.py): the machine's
own RabbitMQ serves everyone else and is never stopped."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from genq import names
from genq.errors import PublishError
from genq.local import WorkerProcess, wait_for
from genq.schema import JobRecord, JobState
from producers import Client
from producers.reliability import audit
from tests.integration.cuttable_link import CuttableLink
from tests.integration.private_rabbit import PrivateRabbit

# Enough long jobs that the queues cannot drain while RabbitMQ stops: a busy node once took
# over 40 s to stop, still delivering, and the worker ran all of 250 meanwhile.
RESTART_JOBS = 700
CUT_JOBS = 1000
# Where the relay cuts a producer's connection: about a quarter of the way into a batch of
# CUT_JOBS messages (~770 bytes each on the wire).
CUT_AFTER_BYTES = 200_000
# A short publish timeout so the cut-off producer gives up in seconds.
IMPATIENT = 3.0


def requests(
    model: str, count: int, *, tag: str, keyed: bool = False, max_tokens: int = 8
) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:6]
    return [
        {
            "model": model,
            "prompt": f"{tag} {i}",
            "priority": i % 10,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            **({"idempotency_key": f"{tag}-{run}-{i}"} if keyed else {}),
        }
        for i in range(count)
    ]


def check_audit(client: Client, ids: list[str], records: list[JobRecord]) -> None:
    line = audit(client.settings.redis_url, client.settings, ids, records)
    print(line)
    assert line.counts() == {
        "accepted": len(ids),
        "succeeded": len(ids),
        "failed": 0,
        "lost": 0,
        "duplicated": 0,
    }
    # Nothing in these scenarios calls for a second run: no worker died, no lease expired.
    assert [r.id for r in records if r.attempts != 1] == []


@pytest.fixture(scope="module")
def model() -> str:
    return f"brk-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def broker_worker(
    make_worker: Any, private_rabbit: PrivateRabbit, model: str
) -> Iterator[WorkerProcess]:
    worker: WorkerProcess = make_worker(
        model_name=model, max_num_seqs=16, name="brk", env={"GENQ_BROKER_URL": private_rabbit.url}
    )
    yield worker
    worker.stop()


@pytest.fixture
def link(private_rabbit: PrivateRabbit) -> Iterator[CuttableLink]:
    relay = CuttableLink(private_rabbit.port)
    yield relay
    relay.close()


def dead_lettered_ids(url: str, model: str) -> set[str]:
    """Drain the model's dead-letter queue; the job IDs of what was in it."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        found = set()
        while True:
            method, props, _body = channel.basic_get(names.dead_queue(model), auto_ack=True)
            if method is None:
                return found
            found.add(props.correlation_id)
    finally:
        conn.close()


def test_a_dropped_producer_connection_is_ridden_out(
    broker_worker: WorkerProcess, link: CuttableLink, model: str
) -> None:
    """Cut once mid-batch: the publisher republishes what was not confirmed on a new
    connection, and `submit_many` returns every ID, each of which runs once."""
    link.arm(after_bytes=CUT_AFTER_BYTES)
    # Patient: what is tested is the retry on a new connection, not how soon a broker
    # loaded by the rest of the suite confirms (in one CI run the retried 100 took > 10 s).
    with Client(models=[model], broker_url=link.url, publish_timeout=60) as client:
        ids = client.submit_many(requests(model, CUT_JOBS, tag="ridden"))
        # The relay held the batch back until the cut, so the cut was inside it, and the
        # rest went through a connection opened after it.
        assert link.cuts == 1 and link.connections_after_cut >= 1
        assert len(set(ids)) == CUT_JOBS
        records = client.wait_many(ids, timeout=600)
        check_audit(client, ids, records)


def test_a_producer_cut_off_raises_for_exactly_the_unconfirmed_jobs(
    broker_worker: WorkerProcess, link: CuttableLink, model: str, private_rabbit: PrivateRabbit
) -> None:
    """Cut mid-batch and stay unreachable past the publish timeout: `submit_many` raises,
    naming what was accepted (it runs) and what was not (no trace; retry it). A retry of
    the rest completes, and a retry of the whole batch with its idempotency keys creates
    nothing twice."""
    batch = requests(model, CUT_JOBS, tag="cutoff", keyed=True)
    link.arm(after_bytes=CUT_AFTER_BYTES, stay_down=True)
    with Client(models=[model], broker_url=link.url, publish_timeout=IMPATIENT) as client:
        with pytest.raises(PublishError) as info:
            client.submit_many(batch)
        error = info.value
        print(f"PublishError: {error}")
        assert link.cuts == 1
        # Part of the batch was confirmed before the cut, and the rest could not be.
        assert 0 < len(error.accepted) < CUT_JOBS
        assert len(error.accepted) + len(error.unaccepted) == CUT_JOBS
        assert f"did not confirm {len(error.unaccepted)} of {CUT_JOBS}" in str(error)
        client.status_many(error.accepted)  # accepted means a record (NotFoundError if not)

        link.up()
        rest = client.submit_many([batch[i] for i in error.unaccepted])
        again = client.submit_many(batch)  # the whole batch, same keys: the same jobs
        accepted_at = [i for i in range(CUT_JOBS) if i not in set(error.unaccepted)]
        assert [again[i] for i in accepted_at] == error.accepted
        assert [again[i] for i in error.unaccepted] == rest
        records = client.wait_many(again, timeout=600)
        check_audit(client, again, records)
    # Copies that reached the broker unconfirmed belong to no accepted job: the worker
    # dead-letters them (no record) instead of running them.
    assert dead_lettered_ids(private_rabbit.url, model).isdisjoint(again)


def test_a_deleted_queue_is_declared_and_consumed_again(
    broker_worker: WorkerProcess, private_rabbit: PrivateRabbit, model: str
) -> None:
    """An operator deletes a level's queue under a running fleet: the broker cancels the
    worker's consumer, and the producer's cached "declared" is stale. The worker starts
    over (declares, consumes again); the producer's message comes back unroutable unless
    the queue is back, and then it declares again. Jobs sent to that level still run."""
    level = 3
    with Client(models=[model], broker_url=private_rabbit.url) as client:
        warm = client.submit_many(requests(model, 10, tag="warm"))  # declares the queues
        client.wait_many(warm, timeout=300)
        conn = pika.BlockingConnection(pika.URLParameters(private_rabbit.url))
        conn.channel().queue_delete(names.level_queue(model, level))
        conn.close()
        ids = client.submit_many(
            [{**r, "priority": level} for r in requests(model, 20, tag="redeclared")]
        )
        records = client.wait_many(ids, timeout=120)
        check_audit(client, ids, records)


def test_broker_restart_mid_run_loses_nothing(
    broker_worker: WorkerProcess, private_rabbit: PrivateRabbit, model: str
) -> None:
    """Restart RabbitMQ (stop, start on the same data) while the worker runs jobs and
    hundreds wait in the queues: the worker and the client reconnect by themselves, the
    queued jobs survive, and every job runs once."""
    with Client(models=[model], broker_url=private_rabbit.url) as client:
        # Long jobs (near the 512-token context), so that many still wait in the queues
        # after `rabbitmqctl stop` (seconds, more on a busy machine) has done its work.
        first = client.submit_many(
            requests(model, RESTART_JOBS - 50, tag="restart", max_tokens=480)
        )

        def mid_run() -> Counter[JobState]:
            states = Counter(r.state for r in client.status_many(first))
            return states if states[JobState.RUNNING] >= 2 else Counter()

        at_restart = wait_for(mid_run, timeout=300, what="the worker to be mid-run")
        assert at_restart[JobState.QUEUED] > 0, "no job waited in the broker: no damage done"

        print(f"at the restart: {dict((s.value, n) for s, n in at_restart.items())}")
        stop_at = time.time()
        private_rabbit.stop()
        down_at = time.time()
        # Jobs still queued now are messages on the stopped broker's disk, nowhere else (the
        # worker's unacked window went back to the queues when its connection closed).
        after_stop = client.status_many(first)
        on_disk = {r.id for r in after_stop if r.state is JobState.QUEUED}
        print(
            f"broker down after {down_at - stop_at:.1f} s; then: "
            f"{dict(Counter(r.state.value for r in after_stop))}"
        )
        assert on_disk, "the queues were empty when the broker went down: no damage done"
        private_rabbit.start()
        # The same client: its connection died with the broker.
        second = client.submit_many(requests(model, 50, tag="after-restart"))
        ids = first + second
        records = client.wait_many(ids, timeout=600)
        check_audit(client, ids, records)

    # They survived the restart, and the worker consumed them once it was back.
    assert all((r.started_at or 0) > down_at for r in records if r.id in on_disk)
    assert broker_worker.proc is not None and broker_worker.proc.poll() is None, (
        "the worker exited instead of reconnecting"
    )
    log = broker_worker.log_path.read_text(errors="replace")
    assert re.search(r"broker connected \(epoch [2-9]", log), "the worker never reconnected"
    # An ack of a delivery from the dead connection, sent on the new one, would close the
    # new channel with this error.
    assert "unknown delivery tag" not in log
    assert broker_worker.stop() == 0, "the worker did not shut down cleanly after reconnecting"
