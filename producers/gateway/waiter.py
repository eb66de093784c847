"""Waiting for jobs to end without polling each one: a completion request, a long-polling
GET, many at once.

Every terminal state change publishes the job's Celery result on a channel named after its
result key (genq's scripts do, as Celery's own result backend does). One pattern subscription
per gateway hears them all and wakes whoever waits on that job. Pub/sub is at-most-once (a
reconnect can lose a message), so a waiter also re-reads its records every `_RECHECK`
seconds whatever it heard: a lost message costs that much latency, never a hang.

A pattern subscription hears the whole fleet's results, not just this gateway's; a per-job
SUBSCRIBE would need a round trip before each wait (or a race) for a saving that matters
only at many thousands of results a second."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from genq import names
from genq.errors import NotFoundError
from genq.schema import JobRecord
from genq.store import decode_record

__all__ = ["Waiter"]

log = logging.getLogger(__name__)

_RECHECK = 1.0
_RECONNECT = 1.0


class Waiter:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def read(self, job_ids: list[str]) -> list[JobRecord]:
        """The records now; `NotFoundError` for an unknown ID."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(names.job_key(job_id))
        out = []
        for job_id, raw in zip(job_ids, await pipe.execute()):
            if not raw:
                raise NotFoundError(f"job {job_id}: not found")
            out.append(decode_record(raw))
        return out

    async def wait(self, job_ids: list[str], *, timeout: float,
                   gone: Callable[[], Awaitable[bool]] | None = None,
                   ) -> tuple[list[JobRecord], bool]:
        """Wait until every job ended, `timeout` passed, or `gone()` (the client hung up).
        Returns the records as they are then and whether all ended."""
        event = asyncio.Event()
        for job_id in job_ids:
            self._waiting.setdefault(job_id, set()).add(event)
        deadline = time.monotonic() + timeout
        try:
            while True:
                event.clear()  # before reading: a result landing after the read sets it
                records = await self.read(job_ids)
                if all(r.done for r in records):
                    return records, True
                left = deadline - time.monotonic()
                if left <= 0 or (gone is not None and await gone()):
                    return records, False
                try:
                    await asyncio.wait_for(event.wait(), min(left, _RECHECK))
                except asyncio.TimeoutError:
                    pass
        finally:
            for job_id in job_ids:
                events = self._waiting.get(job_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._waiting[job_id]

    async def _listen(self) -> None:
        prefix = len(names.CELERY_RESULT_PREFIX)
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(names.CELERY_RESULT_CHANNELS)
                while True:
                    message = await pubsub.get_message(timeout=_RECHECK)
                    if message is None or message.get("type") != "pmessage":
                        continue
                    job_id = str(message["channel"])[prefix:]
                    for event in self._waiting.get(job_id, ()):
                        event.set()
            except (RedisError, OSError) as exc:
                log.warning("result subscription lost (%s); waiters fall back to polling", exc)
                await asyncio.sleep(_RECONNECT)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except (RedisError, OSError):
                    pass
