"""Bad input: refused at submit with the field and the limit, or failed with a reason in the
worker; nothing is lost, nothing pends forever, the worker keeps going."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pika
import pytest

from genq import names
from genq.errors import NotFoundError, ValidationError
from genq.local import WorkerProcess, wait_for
from genq.schema import JobState
from producers import Client
from producers.queues import purge_model
from tests.integration.conftest import REPO


def queue_depth(client: Client, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(client.settings.broker_url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


@pytest.fixture
def idle_model(fleet_env: dict[str, str]) -> str:
    """A declared model no worker serves (workers may be scaled to zero)."""
    return f"idle-{uuid.uuid4().hex[:8]}"


def test_a_declared_model_without_workers_accepts_and_holds_jobs(
    client: Client, idle_model: str
) -> None:
    c = Client(models=[idle_model])
    job_id = c.submit("hello", model=idle_model, priority=3)
    assert c.status(job_id).state is JobState.QUEUED
    assert queue_depth(c, names.level_queue(idle_model, 3)) == 1
    # ... and an invalid request to it publishes nothing.
    for bad in ({"priority": 10}, {"max_tokens": 0}, {"max_tokens": 10**6}):
        with pytest.raises(ValidationError):
            c.submit("hello", model=idle_model, **bad)
    assert sum(queue_depth(c, names.level_queue(idle_model, p)) for p in range(10)) == 1
    purge_model(c.settings, idle_model, delete=True)
    c.close()


def genq_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genq.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["", "--priority", "1"], "prompt: must not be empty"),
        (["hi", "--priority", "10"], "priority: 10 is outside the levels 0..9"),
        (["hi", "--max-tokens", "0"], "max_tokens: 0 is outside 1..4096"),
        (["hi", "--max-tokens", "99999"], "max_tokens: 99999 is outside 1..4096"),
        (["hi", "--temperature", "5"], "temperature"),
    ],
)
def test_cli_refuses_bad_requests_with_exit_2_and_one_line(
    fleet_env: dict[str, str], model_name: str, args: list[str], words: str
) -> None:
    done = genq_cli("submit", *args, "--model", model_name, env=fleet_env)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_cli_refuses_an_undeclared_model(fleet_env: dict[str, str]) -> None:
    done = genq_cli("submit", "hi", "--model", "no-such-model", env=fleet_env)
    assert done.returncode == 2
    assert "model: 'no-such-model' is not served by this fleet" in done.stderr


def test_an_unknown_task_id_reads_as_not_found(client: Client, fleet_env: dict[str, str]) -> None:
    with pytest.raises(NotFoundError):
        client.status("no-such-job")
    with pytest.raises(NotFoundError):
        client.result("no-such-job", timeout=1)
    with pytest.raises(NotFoundError):
        client.cancel("no-such-job")
    done = genq_cli("status", "no-such-job", env=fleet_env)
    assert done.returncode == 1 and "job no-such-job: not found" in done.stderr


def test_a_prompt_over_the_context_fails_alone_and_the_batch_finishes(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    long_prompt = " ".join(f"w{i}" for i in range(3000))  # far over max_model_len 512
    ids = client.submit_many(
        [{"model": model_name, "prompt": f"short {i}", "max_tokens": 4} for i in range(5)]
        + [{"model": model_name, "prompt": long_prompt, "max_tokens": 4}]
        + [{"model": model_name, "prompt": f"after {i}", "max_tokens": 4} for i in range(5)]
    )
    records = client.wait_many(ids, timeout=120)
    failed = records[5]
    assert failed.state is JobState.FAILED
    assert failed.error is not None and "rejected by the engine" in failed.error
    assert "512" in failed.error  # the limit it broke
    assert failed.attempts == 1  # not retried: it would fail again
    assert all(r.state is JobState.SUCCEEDED for i, r in enumerate(records) if i != 5)
    assert worker.proc is not None and worker.proc.poll() is None


def test_malformed_messages_are_dead_lettered_with_a_reason(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    # A job that has a record but whose message is broken: its record must not pend forever.
    real_id = client.submit("fine", model=model_name, priority=0, max_tokens=2)
    client.result(real_id, timeout=60)
    broken_id = uuid.uuid4().hex
    client.store.create(
        [
            {
                "id": broken_id,
                "state": "queued",
                "model": model_name,
                "priority": "1",
                "tenant": "t",
                "enqueued_at": "1.0",
            }
        ]
    )
    conn = pika.BlockingConnection(pika.URLParameters(client.settings.broker_url))
    ch = conn.channel()
    ch.confirm_delivery()
    poison = [
        ({"task": names.TASK_NAME, "id": broken_id}, b"{not json"),
        (None, b"no headers at all"),
        ({"task": "someone.elses.task", "id": "x"}, b"[[], {}, {}]"),
    ]
    for headers, body in poison:
        ch.basic_publish(
            names.EXCHANGE,
            names.level_routing_key(model_name, 1),
            body,
            pika.BasicProperties(headers=headers, delivery_mode=2),
        )

    dead = names.dead_queue(model_name)
    got = []

    def three_dead() -> bool:
        method, props, body = ch.basic_get(dead, auto_ack=True)
        if method is not None:
            got.append((props.headers or {}, body))
        return len(got) >= 3

    wait_for(three_dead, timeout=60, what="three dead-lettered messages")
    conn.close()
    reasons = [h.get("x-genq-reason", "") for h, _ in got]
    assert all(r.startswith("malformed message") for r in reasons), reasons
    assert any("body" in r for r in reasons) and any("headers.task" in r for r in reasons)
    assert sorted(b for _, b in got) == sorted(b for _, b in poison)

    broken = wait_for(
        lambda: (r := client.status(broken_id)).done and r,
        timeout=30,
        what="the broken job's record to fail",
    )
    assert broken.state is JobState.FAILED and "malformed" in (broken.error or "")
    # The worker kept going.
    after = client.result(client.submit("still alive?", model=model_name, max_tokens=2), timeout=60)
    assert after.state is JobState.SUCCEEDED


def test_dead_letters_can_be_listed_and_a_failed_job_requeued(
    worker: WorkerProcess, client: Client, model_name: str, fleet_env: dict[str, str]
) -> None:
    from producers.dead import list_dead, requeue_dead

    job_id = client.submit("needs another go", model=model_name, max_tokens=3, ignore_eos=True)
    client.result(job_id, timeout=60)
    # Fail it and dead-letter a copy, as the worker does after its last attempt.
    client.store.redis.hset(names.job_key(job_id), mapping={"state": "failed", "error": "boom"})
    message = client.store.task_message(job_id)
    from genq.protocol import encode_task

    headers, body = encode_task(
        message.spec, job_id=job_id, enqueued_at=message.enqueued_at, deadline_at=None, attempts=3
    )
    conn = pika.BlockingConnection(pika.URLParameters(client.settings.broker_url))
    ch = conn.channel()
    ch.basic_publish(
        names.DEAD_EXCHANGE,
        names.dead_routing_key(model_name),
        body,
        pika.BasicProperties(
            headers={**headers, "x-genq-reason": "boom", "x-genq-attempts": 3}, delivery_mode=2
        ),
    )
    conn.close()

    listed = wait_for(
        lambda: [d for d in list_dead(client, model_name) if d.job_id == job_id],
        timeout=10,
        what="the dead letter",
    )
    assert listed[0].reason == "boom" and listed[0].attempts == 3
    done = genq_cli("dead", "list", "--model", model_name, env=fleet_env)
    assert done.returncode == 0 and job_id in done.stdout

    requeue_dead(client, model_name, job_id)
    record = client.result(job_id, timeout=60)
    assert record.state is JobState.SUCCEEDED and record.attempts == 1
    assert not [d for d in list_dead(client, model_name) if d.job_id == job_id]
