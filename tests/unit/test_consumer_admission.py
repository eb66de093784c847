"""The consumer's bookkeeping around a job whose ADMIT is on its way to Redis and back.

Pure logic of `GpuConsumer`: the broker link, the task events and the engine's early start
are recorders here (no engine, no services); what they record is what the consumer decided.
The same paths run for real in tests/integration (test_fleet's cancels, test_redis_restart's
admissions that fail while Redis is away)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from celery import Celery

from genq.protocol import decode_task, encode_task
from genq.schema import JobSpec, JobState
from genq.settings import WorkerSettings
from scheduler import Candidate
from workers.broker import Delivery
from workers.consumer import GpuConsumer


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **_kwargs: self.calls.append((name, args))


class _EarlyStart:
    abandoned = False

    def abandon(self) -> None:
        self.abandoned = True


def _consumer() -> GpuConsumer:
    consumer = GpuConsumer(settings=WorkerSettings(), engine_args=None, served_model="m",
                           app=Celery(), hostname="w@test")
    consumer.broker = _Recorder()  # type: ignore[assignment]
    consumer.events = _Recorder()  # type: ignore[assignment]
    return consumer


def _candidate(job_id: str, tag: int = 7) -> Candidate[Any]:
    headers, body = encode_task(JobSpec(model="m", prompt="hi", max_tokens=4), job_id=job_id,
                                enqueued_at=time.time(), deadline_at=None)
    delivery = Delivery(epoch=1, tag=tag, level=0, headers=headers, body=body,
                        redelivered=False)
    message = decode_task(headers, body)
    return Candidate(job_id=job_id, priority=0, cost=10.0, enqueued_at=message.enqueued_at,
                     tenant="default", payload=(delivery, message, None))


def test_a_cancel_arriving_before_admits_reply_ends_the_job_instead_of_running_it() -> None:
    async def scenario() -> None:
        consumer = _consumer()
        ended: list[tuple[str, JobState]] = []

        async def end(job_id: str, state: JobState, *, error: str) -> None:
            ended.append((job_id, state))

        consumer._end = end  # type: ignore[method-assign]
        candidate = _candidate("job-1")
        early = _EarlyStart()
        consumer._early["job-1"] = early  # type: ignore[assignment]
        consumer._admitting.add("job-1")
        # ADMIT has run in Redis (the job is `running` there); its reply is not back yet
        # when the client's cancel arrives.
        consumer._on_cancel("job-1")
        consumer._admitting.discard("job-1")
        consumer._act(candidate, "running")
        await asyncio.sleep(0)  # let the scheduled end run

        assert ended == [("job-1", JobState.CANCELLED)]
        assert "job-1" not in consumer._running
        assert early.abandoned and consumer.stats["early_aborted"] == 1
        assert consumer.stats["admitted"] == 0
        assert ("ack", (1, 7)) in consumer.broker.calls  # type: ignore[attr-defined]
        assert ("revoked", ("job-1",)) in consumer.events.calls  # type: ignore[attr-defined]
        assert not consumer._cancelled

    asyncio.run(scenario())


def test_a_cancel_for_a_job_not_at_hand_is_not_kept() -> None:
    consumer = _consumer()
    consumer._on_cancel("elsewhere")  # another worker's job: nothing to remember
    assert not consumer._cancelled


def test_a_second_copy_of_a_job_in_admission_is_acked_as_a_duplicate() -> None:
    async def scenario() -> None:
        consumer = _consumer()
        consumer._wake = asyncio.Event()
        consumer._admitting.add("job-2")
        copy = _candidate("job-2", tag=9).payload[0]
        consumer._on_delivery(copy)
        assert consumer.broker.calls == [("ack", (1, 9))]  # type: ignore[attr-defined]
        assert "job-2" not in consumer._held and not len(consumer._queue)

    asyncio.run(scenario())
