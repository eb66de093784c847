"""Result cache and single flight, against real Redis, RabbitMQ and a real vLLM worker.

"Never reaches the engine" is proven by the worker's own count of admitted jobs (its stats
hash in Redis), read from a heartbeat taken after the fact."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from genq import names
from genq.cache import cache_key
from genq.errors import PublishError
from genq.local import WorkerProcess, wait_for
from genq.schema import JobState
from genq.settings import ClientSettings
from producers import Client
from workers.ledger import Ledger

pytestmark = pytest.mark.integration


def _redis() -> redis.Redis:
    return redis.Redis.from_url(ClientSettings().redis_url, decode_responses=True)


def _admitted(worker: WorkerProcess) -> int:
    """Jobs the worker has admitted into its engine, from a heartbeat taken after now."""
    return int(_stats(worker)["admitted"])


def _stats(worker: WorkerProcess) -> dict[str, str]:
    """The worker's stats hash, from a heartbeat taken after now."""
    since = time.time()
    r = _redis()

    def fresh() -> dict[str, str] | None:
        stats = r.hgetall(names.worker_stats_key(worker.hostname))
        return stats if stats and float(stats["at"]) > since else None

    stats = wait_for(fresh, timeout=30, what="a worker heartbeat")
    r.close()
    return stats


def _celery(client: Client) -> Celery:
    return Celery(backend=client.settings.redis_url, broker=client.settings.broker_url)


def _unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex}"


# -- with the worker ------------------------------------------------------------------------


def test_a_cache_hit_returns_the_same_result_without_reaching_the_engine(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    request = {
        "model": model_name,
        "prompt": _unique("hit"),
        "max_tokens": 8,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    first = client.result(client.submit(**request), timeout=120)
    assert first.state is JobState.SUCCEEDED, first.error
    assert not first.cached and first.attempts == 1
    admitted = _admitted(worker)
    stats = client.cache_stats()

    # Priority, tenant, deadline and idempotency key are not part of the request's identity.
    job_id = client.submit(
        **request, priority=9, tenant="someone-else", deadline=600, idempotency_key=uuid.uuid4().hex
    )
    second = client.status(job_id)  # answered at submit: no waiting
    assert second.state is JobState.SUCCEEDED and second.cached
    assert (second.text, second.usage, second.finish_reason) == (
        first.text,
        first.usage,
        first.finish_reason,
    )
    assert second.attempts == 0 and second.started_at is None and second.worker is None
    assert second.priority == 9 and second.tenant == "someone-else"
    assert AsyncResult(job_id, app=_celery(client)).get(timeout=10)["text"] == first.text

    assert _admitted(worker) == admitted
    assert client.cache_stats().hits >= stats.hits + 1


def test_identical_requests_in_flight_share_one_execution(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    # Sampled, with a fixed seed: deterministic too.
    request = {
        "model": model_name,
        "prompt": _unique("flight"),
        "max_tokens": 48,
        "temperature": 0.9,
        "seed": 1234,
        "ignore_eos": True,
    }
    admitted = _admitted(worker)
    # Followers as urgent as the leader or less (a more urgent one would not wait behind it).
    batch = client.submit_many([{**request, "priority": 2 - p % 3} for p in range(8)])
    # More, one at a time, while the first runs (or after it ended: then they are hits).
    later = [client.submit(**request) for _ in range(2)]
    records = client.wait_many(batch + later, timeout=180)

    assert all(r.state is JobState.SUCCEEDED for r in records), [r.error for r in records]
    assert len({r.text for r in records}) == 1
    ran = [r for r in records if not r.cached]
    assert len(ran) == 1 and ran[0].id == batch[0] and ran[0].attempts == 1
    for record in records[1:]:
        assert record.cached and record.attempts == 0 and record.started_at is None
        assert record.usage == ran[0].usage
    assert _admitted(worker) == admitted + 1
    app = _celery(client)
    assert {AsyncResult(i, app=app).get(timeout=10)["text"] for i in batch[1:]} == {ran[0].text}


def test_cache_false_runs_again_and_shares_no_flight(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    request = {
        "model": model_name,
        "prompt": _unique("opt-out"),
        "max_tokens": 4,
        "temperature": 0.0,
    }
    first = client.result(client.submit(**request), timeout=120)
    assert first.state is JobState.SUCCEEDED and not first.cached
    admitted = _admitted(worker)
    again = client.wait_many(client.submit_many([{**request, "cache": False}] * 2), timeout=120)
    assert all(r.state is JobState.SUCCEEDED and not r.cached and r.attempts == 1 for r in again)
    assert _admitted(worker) == admitted + 2


def test_sampled_requests_without_a_seed_are_never_cached(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    request = {
        "model": model_name,
        "prompt": _unique("sampled"),
        "max_tokens": 4,
        "temperature": 0.8,
    }
    admitted = _admitted(worker)
    ids = client.submit_many([request] * 2)
    client.wait_many(ids, timeout=120)
    ids.append(client.submit(**request))
    records = client.wait_many(ids, timeout=120)
    assert all(r.state is JobState.SUCCEEDED and not r.cached for r in records)
    assert _admitted(worker) == admitted + 3
    r = _redis()
    assert not any(r.hexists(names.job_key(i), "cache_key") for i in ids)
    r.close()


def test_followers_of_a_leader_that_expired_get_a_result_from_one_of_them(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    request = {
        "model": model_name,
        "prompt": _unique("expired leader"),
        "max_tokens": 8,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    admitted = _admitted(worker)
    # The leader's deadline (a Unix time) has passed: the worker expires it unstarted.
    ids = client.submit_many([{**request, "deadline": time.time() - 1}, request, request])
    leader, promoted, follower = client.wait_many(ids, timeout=120)
    assert leader.state is JobState.EXPIRED and leader.attempts == 0
    assert promoted.state is JobState.SUCCEEDED and not promoted.cached
    assert promoted.attempts == 1
    assert follower.state is JobState.SUCCEEDED and follower.cached
    assert follower.text == promoted.text
    assert _admitted(worker) == admitted + 1


def test_cancelling_a_running_leader_leaves_its_followers_a_result(
    worker: WorkerProcess, client: Client, model_name: str
) -> None:
    request = {
        "model": model_name,
        "prompt": _unique("cancelled leader"),
        "max_tokens": 400,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    # A full batch slows every step, so the leader is still running when it is cancelled.
    blockers = client.submit_many(
        [
            {
                "model": model_name,
                "prompt": f"busy {i}",
                "max_tokens": 400,
                "ignore_eos": True,
                "temperature": 0.8,
            }
            for i in range(15)
        ]
    )
    leader, first, second = client.submit_many([request] * 3)
    wait_for(
        lambda: client.status(leader).state is JobState.RUNNING,
        timeout=120,
        what="the leader to run",
    )
    assert client.cancel(first) == "cancelled"  # a follower: only itself
    assert client.status(leader).state is JobState.RUNNING
    assert client.cancel(leader) == "cancelling"
    for job_id in blockers:
        client.cancel(job_id)
    records = client.wait_many([leader, first, second], timeout=300)
    assert [r.state for r in records] == [
        JobState.CANCELLED,
        JobState.CANCELLED,
        JobState.SUCCEEDED,
    ]
    assert not records[2].cached and records[2].attempts == 1  # it ran in the leader's place
    assert records[2].usage is not None and records[2].usage.completion_tokens == 400
    client.wait_many(blockers, timeout=120)


# -- the store's rules, with a model no worker serves (its jobs stay queued) ---------------


@pytest.fixture
def idle(services_up: None) -> Iterator[tuple[Client, str]]:
    model = f"idle-{uuid.uuid4().hex[:8]}"
    with Client(models=[model]) as c:
        yield c, model
    conn = pika.BlockingConnection(pika.URLParameters(ClientSettings().broker_url))
    channel = conn.channel()
    for level in range(ClientSettings().levels):
        channel.queue_delete(names.level_queue(model, level))
    channel.queue_delete(names.dead_queue(model))
    conn.close()


def _queued_messages(model: str, level: int = 0) -> list[str]:
    """The task IDs waiting in a level queue (read and put back)."""
    conn = pika.BlockingConnection(pika.URLParameters(ClientSettings().broker_url))
    channel = conn.channel()
    ids = []
    while True:
        method, props, _body = channel.basic_get(names.level_queue(model, level))
        if method is None:
            break
        ids.append(props.headers["id"])
    conn.close()  # unacked: they go back
    return ids


def _raw(job_id: str) -> dict[str, str]:
    r = _redis()
    raw = r.hgetall(names.job_key(job_id))
    r.close()
    return raw


def _finish(job_id: str, state: JobState, **kwargs: Any) -> str:
    async def run() -> str:
        ledger = Ledger(
            ClientSettings().redis_url,
            ClientSettings(),
            job_ttl=600,
            lease_seconds=30,
            worker="test",
        )
        try:
            return await ledger.finish(job_id, state, **kwargs)
        finally:
            await ledger.close()

    return asyncio.run(run())


def _result(text: str) -> dict[str, Any]:
    return {
        "text": text,
        "finish_reason": "length",
        "model": "m",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }


def test_a_cancelled_queued_leader_hands_its_flight_to_a_follower(idle: tuple[Client, str]) -> None:
    client, model = idle
    request = {"model": model, "prompt": _unique("queued leader"), "temperature": 0.0}
    leader, first, second = client.submit_many([request] * 3)
    assert _raw(first)["leader"] == leader and _raw(second)["leader"] == leader
    assert _queued_messages(model) == [leader]  # followers are not published

    assert client.cancel(first) == "cancelled"
    assert client.status(leader).state is JobState.QUEUED
    assert client.cancel(leader) == "cancelled"
    # The remaining follower runs in its place: published, and no longer following anyone.
    assert client.status(second).state is JobState.QUEUED
    assert _raw(second)["leader"] == ""
    assert sorted(_queued_messages(model)) == sorted([leader, second])
    r = _redis()
    assert r.zscore(names.LEASES, second) is None  # published, so its lease was released
    r.close()
    # New identical requests follow the promoted job; its result reaches them and is stored.
    third = client.submit(**request)
    assert _raw(third)["leader"] == second
    assert _finish(second, JobState.SUCCEEDED, result=_result("once")) == "ok"
    done = client.status(third)
    assert done.state is JobState.SUCCEEDED and done.cached and done.text == "once"
    assert client.status(first).state is JobState.CANCELLED  # it stays what it was
    hit = client.status(client.submit(**request))
    assert hit.state is JobState.SUCCEEDED and hit.cached and hit.text == "once"


def test_followers_share_a_leaders_failure(idle: tuple[Client, str]) -> None:
    client, model = idle
    request = {"model": model, "prompt": _unique("failing"), "temperature": 0.0}
    leader, follower = client.submit_many([request] * 2)
    assert _finish(leader, JobState.FAILED, error="rejected by the engine: too long") == "ok"
    record = client.status(follower)
    assert record.state is JobState.FAILED and record.error is not None
    assert "too long" in record.error and leader in record.error
    # Nothing was stored, and the flight is over: the next one leads a new flight.
    nxt = client.submit(**request)
    assert client.status(nxt).state is JobState.QUEUED and "leader" not in _raw(nxt)


def test_a_leader_expiring_in_the_worker_promotes_a_follower_under_an_expired_lease(
    idle: tuple[Client, str],
) -> None:
    client, model = idle
    request = {"model": model, "prompt": _unique("expiring"), "temperature": 0.0}
    leader, follower = client.submit_many([request] * 2)
    assert _finish(leader, JobState.EXPIRED, error="deadline passed") == "promoted"
    r = _redis()
    lease = r.zscore(names.LEASES, follower)
    assert lease is not None and lease <= time.time()  # the next reaper publishes it
    r.zrem(names.LEASES, follower)
    r.close()


def test_a_more_urgent_request_does_not_wait_behind_a_queued_leader(
    idle: tuple[Client, str],
) -> None:
    client, model = idle
    request = {"model": model, "prompt": _unique("urgency"), "temperature": 0.0}
    bulk = client.submit(**request, priority=0)
    urgent = client.submit(**request, priority=5)
    assert "leader" not in _raw(urgent)  # runs on its own, at its own level
    assert _queued_messages(model, 5) == [urgent]
    assert _raw(client.submit(**request, priority=5))["leader"] == urgent
    assert _raw(client.submit(**request, priority=0))["leader"] == urgent
    assert client.status(bulk).state is JobState.QUEUED


def test_a_lost_publish_leaves_no_flight_behind(services_up: None) -> None:
    model = f"idle-{uuid.uuid4().hex[:8]}"
    request = {"model": model, "prompt": _unique("lost"), "temperature": 0.0}
    with Client(
        models=[model], broker_url="amqp://guest:guest@127.0.0.1:1/%2F", publish_timeout=1
    ) as broken:
        with pytest.raises(PublishError) as info:
            broken.submit_many([request] * 2)
        assert info.value.accepted == []  # type: ignore[attr-defined]
        digest = cache_key(broken.validate(request))
    assert digest is not None
    r = _redis()
    assert r.get(names.flight_key(digest)) is None  # the next one is not a ghost's follower
    r.close()


def test_the_prefix_cache_hits_on_a_repeated_prompt_and_the_worker_reports_it(
    client: Client, worker: WorkerProcess, model_name: str
) -> None:
    # Long enough to fill whole KV blocks (only full blocks are cached), and not cacheable
    # as a result (sampled, no seed) so both requests reach the engine.
    prompt = _unique("prefix") + " " + " ".join(f"word{i}" for i in range(120))
    before = _stats(worker)
    first = client.result(
        client.submit(prompt, model=model_name, max_tokens=2, temperature=1.0), timeout=60
    )
    second = client.result(
        client.submit(prompt, model=model_name, max_tokens=2, temperature=1.0), timeout=60
    )
    after = _stats(worker)
    assert first.usage is not None and second.usage is not None
    queried = int(after["prefix_queries"]) - int(before["prefix_queries"])
    hits = int(after["prefix_hits"]) - int(before["prefix_hits"])
    # (At least: the shared worker may finish another test's straggler meanwhile.)
    assert queried >= first.usage.prompt_tokens + second.usage.prompt_tokens
    assert hits > 0, "the repeated prompt found nothing in the prefix cache"
