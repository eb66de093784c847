"""Waiting for jobs to end, for any number of requests at once, on two Redis connections.

Every terminal state change publishes the job's Celery result on a channel named after its
result key (genq's scripts do, as Celery's own result backend does). One pattern
subscription per gateway process hears them all; a waiter is a watch on a set of job IDs,
and a result for a watched job wakes the reader, which reads its record once, in one
pipeline with every other record due, and hands it to every watch of that job.

So the Redis cost of waiting does not grow with the number of requests waiting: the
subscription holds one connection, and every record read (a request's first look, the
records a result announced, the sweep) goes through one reader task that sends one pipeline
at a time on one connection of the gateway's pool. Reads that arrive while a pipeline is out
are merged into the next one.

The pattern hears the whole fleet's results, not just this gateway's: an announcement costs
each gateway a dictionary look-up, where a SUBSCRIBE per job would cost a round trip before
each wait (or a race). It matters only at many thousands of results a second.

Pub/sub is at-most-once (a reconnect loses what was published meanwhile), and a result may
land between a request's submission and its watch: so a watch is registered before its
first read, and every `_SWEEP` seconds the reader asks the state (a short HGET) of every
watched job that has not ended, reading the whole record of those that did. A lost message
costs that much latency, never a hang."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from genq import names
from genq.errors import NotFoundError
from genq.schema import TERMINAL_STATES, JobRecord
from genq.store import decode_record
from genq.tasks import stop_tasks

__all__ = ["Waiter"]

log = logging.getLogger(__name__)

# Seconds between sweeps of the watched jobs' states: the latency of a result whose
# announcement was lost, and how often a waiter checks whether its client hung up.
_SWEEP = 1.0
_RECONNECT = 1.0
# Commands per pipeline: big enough that a thousand waiters cost one round trip, small
# enough that one pipeline never stalls Redis for long.
_CHUNK = 2000
_TERMINAL = frozenset(s.value for s in TERMINAL_STATES)


@dataclass(eq=False)
class _Watch:
    """One request waiting on some jobs: their latest records, and a wake-up."""

    records: dict[str, JobRecord | None]
    event: asyncio.Event = field(default_factory=asyncio.Event)
    missing: str | None = None
    """A watched job whose record vanished (expired): the wait ends with `NotFoundError`."""

    def done(self) -> bool:
        return all(r is not None and r.done for r in self.records.values())


@dataclass(eq=False)
class _Read:
    job_ids: list[str]
    future: asyncio.Future[list[JobRecord | None]]


class Waiter:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._watches: dict[str, set[_Watch]] = {}
        self._reads: list[_Read] = []
        self._announced: set[str] = set()
        """Watched jobs whose end was announced (or seen by the sweep): read them next."""
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._reader())]

    async def stop(self) -> None:
        await stop_tasks(*self._tasks)
        for read in self._reads:
            if not read.future.done():
                read.future.set_exception(RedisError("the gateway is stopping"))

    @property
    def waiting(self) -> int:
        """Jobs watched now (a job two requests wait on counts once)."""
        return len(self._watches)

    async def read(self, job_ids: list[str]) -> list[JobRecord]:
        """The records now; `NotFoundError` for an unknown ID."""
        records = await self._read(job_ids)
        for job_id, record in zip(job_ids, records, strict=True):
            if record is None:
                raise NotFoundError(f"job {job_id}: not found")
        return records  # type: ignore[return-value]

    async def wait(
        self,
        job_ids: list[str],
        *,
        timeout: float,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> tuple[list[JobRecord], bool]:
        """Wait until every job ended, `timeout` passed, or `gone()` (the client hung up).
        Returns the records as they are then and whether all ended."""
        deadline = time.monotonic() + timeout
        watch = _Watch(records=dict.fromkeys(job_ids))
        # Watched before the first read: a result landing in between is announced to us.
        for job_id in job_ids:
            self._watches.setdefault(job_id, set()).add(watch)
        try:
            for job_id, record in zip(job_ids, await self.read(job_ids), strict=True):
                watch.records[job_id] = _newer(watch.records[job_id], record)
            while True:
                # Cleared before looking: a delivery while `gone()` is awaited below sets it
                # again, and the wait returns at once instead of missing it.
                watch.event.clear()
                if watch.done():
                    return self._records(watch, job_ids), True
                if watch.missing is not None:
                    raise NotFoundError(f"job {watch.missing}: not found")
                left = deadline - time.monotonic()
                if left <= 0 or (gone is not None and await gone()):
                    # The last word on the ones still going, not what the first read saw.
                    fresh = await self.read(
                        [j for j, r in watch.records.items() if r is None or not r.done]
                    )
                    for record in fresh:
                        watch.records[record.id] = _newer(watch.records[record.id], record)
                    return self._records(watch, job_ids), watch.done()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(watch.event.wait(), min(left, _SWEEP))
        finally:
            for job_id in job_ids:
                watches = self._watches.get(job_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._watches[job_id]

    @staticmethod
    def _records(watch: _Watch, job_ids: list[str]) -> list[JobRecord]:
        return [r for r in (watch.records[j] for j in job_ids) if r is not None]

    # -- the reader ---------------------------------------------------------------------------

    async def _read(self, job_ids: list[str]) -> list[JobRecord | None]:
        future: asyncio.Future[list[JobRecord | None]] = asyncio.get_running_loop().create_future()
        self._reads.append(_Read(list(job_ids), future))
        self._kick.set()
        return await future

    async def _reader(self) -> None:
        """Reads every record due, one pipeline at a time; sweeps every `_SWEEP` s."""
        next_sweep = time.monotonic() + _SWEEP
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), max(0.0, next_sweep - time.monotonic()))
            self._kick.clear()
            reads: list[_Read] = []
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + _SWEEP
                    await self._sweep()
                reads, self._reads = self._reads, []
                announced, self._announced = self._announced, set()
                await self._serve(reads, announced)
            except (RedisError, OSError) as exc:
                # The requests that asked get the error (a 503 before anything was accepted,
                # or a retry for a stream); watched jobs are swept again next round.
                log.warning("reading job records failed: %s", exc)
                for read in reads:
                    if not read.future.done():
                        read.future.set_exception(exc)
                await asyncio.sleep(min(_RECONNECT, _SWEEP))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: fail the requests, keep serving the others
                log.exception("job record reader")
                for read in reads:
                    if not read.future.done():
                        read.future.set_exception(exc)

    async def _serve(self, reads: list[_Read], announced: set[str]) -> None:
        wanted = list(
            dict.fromkeys(
                [j for r in reads for j in r.job_ids] + [j for j in announced if j in self._watches]
            )
        )
        found = dict(zip(wanted, await self._hgetall(wanted), strict=True)) if wanted else {}
        for read in reads:
            if not read.future.done():
                read.future.set_result([found[j] for j in read.job_ids])
        self._deliver({j: found[j] for j in announced if j in found})

    def _deliver(self, records: dict[str, JobRecord | None]) -> None:
        for job_id, record in records.items():
            for watch in self._watches.get(job_id, ()):
                if record is None:
                    watch.missing = job_id
                else:
                    watch.records[job_id] = _newer(watch.records[job_id], record)
                watch.event.set()

    async def _hgetall(self, job_ids: list[str]) -> list[JobRecord | None]:
        out: list[JobRecord | None] = []
        for chunk in _chunks(job_ids):
            pipe = self._redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hgetall(names.job_key(job_id))
            out.extend(decode_record(raw) if raw else None for raw in await pipe.execute())
        return out

    async def _sweep(self) -> None:
        """Find watched jobs that ended unannounced (or vanished) by their state alone."""
        unfinished = [
            j
            for j, watches in self._watches.items()
            if any(not _ended(w.records.get(j)) for w in watches)
        ]
        for chunk in _chunks(unfinished):
            pipe = self._redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hget(names.job_key(job_id), "state")
            for job_id, state in zip(chunk, await pipe.execute(), strict=True):
                if state is None or state in _TERMINAL:
                    self._announced.add(job_id)

    # -- the subscription ---------------------------------------------------------------------

    async def _listen(self) -> None:
        prefix = len(names.CELERY_RESULT_PREFIX)
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(names.CELERY_RESULT_CHANNELS)
                while True:
                    message = await pubsub.get_message(timeout=_SWEEP)
                    if message is None or message.get("type") != "pmessage":
                        continue
                    job_id = str(message["channel"])[prefix:]
                    if job_id in self._watches:
                        self._announced.add(job_id)
                        self._kick.set()
            except (RedisError, OSError) as exc:
                log.warning("result subscription lost (%s); the sweep finds results meanwhile", exc)
                await asyncio.sleep(_RECONNECT)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


def _ended(record: JobRecord | None) -> bool:
    return record is not None and record.done


def _newer(old: JobRecord | None, new: JobRecord) -> JobRecord:
    """A job's record only moves forward: an ended record is never replaced by a read that
    raced it and saw it still going."""
    return old if old is not None and old.done and not new.done else new


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
