"""The client's side of the job store (synchronous): create, read, cancel, requeue."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, cast

import redis

from genq import names
from genq.cache import CacheStats
from genq.errors import NotFoundError, StoreError, ValidationError
from genq.protocol import TaskMessage
from genq.schema import JobRecord, JobState
from genq.store.records import decode_record
from genq.store.results import celery_meta, date_done
from genq.store.scripts import (
    ABANDON,
    CANCEL,
    RELEASE,
    REVIVE,
    SUBMIT,
    abandon_args,
    abandon_keys,
    cancel_args,
    cancel_keys,
    release_args,
    release_keys,
    revive_keys,
    submit_args,
    submit_keys,
)
from genq.tls import TlsSettings, redis_from_url

__all__ = ["Created", "JobStore"]


class Created(NamedTuple):
    """What `JobStore.create` made of a new record."""

    outcome: str
    """`new` (not cacheable) or `leader` (the first of its kind): publish it; `follower`
    (an identical job is queued or running) or `hit` (a stored result answered it): don't."""
    leader: str | None = None
    """A follower's leader."""


class JobStore:
    """Client-side access to job records (synchronous; workers use `workers.ledger`)."""

    def __init__(
        self, url: str, tls: TlsSettings, *, job_ttl: int, client_name: str | None = None
    ) -> None:
        self._redis = redis_from_url(url, tls, decode_responses=True, client_name=client_name)
        self._job_ttl = job_ttl
        self._cancel = self._redis.register_script(CANCEL)
        self._submit = self._redis.register_script(SUBMIT)
        self._abandon = self._redis.register_script(ABANDON)
        self._release = self._redis.register_script(RELEASE)
        self._revive = self._redis.register_script(REVIVE)

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    def close(self) -> None:
        self._redis.close()

    def create(self, records: Iterable[dict[str, str]]) -> list[Created]:
        """Write new records in one round trip. They live job_ttl plus however long they
        queue: the TTL is renewed when the job finishes. A record with a `cache_key` goes
        through SUBMIT, which may answer it from the cache or make it a follower."""
        now, date = repr(time.time()), date_done()
        pipe = self._redis.pipeline(transaction=False)
        cacheable = []
        for fields in records:
            job_id = fields["id"]
            key = names.job_key(job_id)
            digest = fields.get("cache_key")
            cacheable.append(bool(digest))
            if not digest:
                row: Mapping[Any, str] = fields  # redis-py types keys as any encodable
                pipe.hset(key, mapping=row)
                pipe.expire(key, self._job_ttl)
                continue
            self._submit(
                keys=submit_keys(job_id, digest),
                args=submit_args(
                    job_id=job_id, ttl=self._job_ttl, now=now, date_done=date, fields=fields
                ),
                client=pipe,
            )
        replies = iter(self._run(pipe))
        out = []
        for is_cacheable in cacheable:
            if is_cacheable:
                outcome, leader = next(replies)
                out.append(Created(str(outcome), str(leader) or None))
            else:
                next(replies)  # HSET
                next(replies)  # EXPIRE
                out.append(Created("new"))
        return out

    def abandon(self, job_ids: Iterable[str], *, error: str) -> None:
        """Remove jobs whose messages were never published; a leader's followers fail."""
        now, date = repr(time.time()), date_done()
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            self._abandon(
                keys=abandon_keys(job_id),
                args=abandon_args(
                    job_id=job_id, now=now, ttl=self._job_ttl, date_done=date, error=error
                ),
                client=pipe,
            )
        self._run(pipe)

    def delete(self, job_ids: Iterable[str]) -> None:
        keys = [names.job_key(i) for i in job_ids]
        if keys:
            self._redis.delete(*keys)

    def get(self, job_id: str) -> JobRecord:
        return self.get_many([job_id])[0]

    def get_many(self, job_ids: list[str]) -> list[JobRecord]:
        """Read many records in one pipelined round trip; `NotFoundError` for an unknown ID."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(names.job_key(job_id))
        out = []
        for job_id, raw in zip(job_ids, self._run(pipe), strict=False):
            if not raw:
                raise NotFoundError(f"job {job_id}: not found")
            out.append(decode_record(raw))
        return out

    def revive(self, job_id: str) -> None:
        """Put a failed job back to `queued` (its message is republished by the caller)."""
        outcome = self._revive(keys=revive_keys(job_id))
        if outcome == "missing":
            raise NotFoundError(f"job {job_id}: not found")
        if outcome != "queued":
            raise ValidationError(f"job {job_id}: is {outcome}, only a failed job is requeued")

    def task_message(self, job_id: str) -> TaskMessage:
        """The message that runs a job, rebuilt from its record (to republish it)."""
        try:
            # decode_responses: str keys and values, which redis-py's types cannot know.
            raw = cast("dict[str, str]", self._redis.hgetall(names.job_key(job_id)))
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        if not raw:
            raise NotFoundError(f"job {job_id}: not found")
        return TaskMessage.from_record(job_id, raw)

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns `cancelled`, `cancelling` or the state it already had."""
        return self.cancel_job(job_id)[0]

    def cancel_job(
        self, job_id: str, *, promote_lease: float | None = None
    ) -> tuple[str, str | None]:
        """`cancel`, also returning the follower promoted to run in place of a cancelled
        single-flight leader. It holds a lease until `promote_lease` (default: expired at
        once, so the next worker reaper publishes it); a caller that publishes it sooner
        calls `release` with the same lease afterwards."""
        now = time.time()
        lease = repr(now if promote_lease is None else promote_lease)
        meta = celery_meta(job_id, JobState.CANCELLED, None, error="cancelled by the client")
        try:
            outcome, promoted = self._cancel(
                keys=cancel_keys(job_id),
                args=cancel_args(
                    job_id=job_id,
                    now=repr(now),
                    ttl=self._job_ttl,
                    celery_meta=meta,
                    cancel_channel=names.CANCEL_CHANNEL,
                    date_done=date_done(),
                    promote_lease=lease,
                ),
            )
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        if outcome == "missing":
            raise NotFoundError(f"job {job_id}: not found")
        return str(outcome), str(promoted) or None

    def release(self, job_id: str, lease: float) -> str:
        """Drop a promoted job's lease once its message is published (see release.lua)."""
        try:
            return str(
                self._release(
                    keys=release_keys(job_id), args=release_args(job_id=job_id, lease=repr(lease))
                )
            )
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    def cache_stats(self) -> CacheStats:
        """The result cache's counters (every producer's): hits, misses, followers."""
        try:
            raw = self._redis.hgetall(names.CACHE_STATS)
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        return CacheStats(
            hits=int(raw.get("hits", 0)),
            misses=int(raw.get("misses", 0)),
            followers=int(raw.get("followers", 0)),
        )

    def _run(self, pipe: Any) -> list[Any]:
        try:
            replies: list[Any] = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        return replies
