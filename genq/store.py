"""The Redis job store: one hash per job, plus Celery's result key so `AsyncResult` works.

Every state change that must be atomic (admit, finish, cancel, republish) is a Lua script
here, so the client and the worker run the same rules: a terminal state is final and the
first result stored wins, which is what makes "exactly one stored result per job" hold when
a job runs twice after a worker died."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import redis

from genq import names
from genq.errors import NotFoundError, StoreError
from genq.schema import JobRecord, JobSpec, JobState, Usage

__all__ = [
    "ADMIT",
    "CANCEL",
    "FINISH",
    "HANDBACK",
    "JobStore",
    "RELEASE",
    "celery_meta",
    "decode_record",
    "new_record_fields",
]

# KEYS: job, leases. ARGV: id, now, worker, lease_expiry.
# Returns what the caller must do: "running" (run it), "leased" (a live worker runs it: drop
# this copy), "expired" (deadline passed: record it with FINISH), "missing", or a terminal state.
ADMIT = """
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 'missing' end
local now = tonumber(ARGV[2])
if s == 'running' then
  local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if lease and tonumber(lease) > now then return 'leased' end
elseif s ~= 'queued' then
  return s
else
  local d = redis.call('HGET', KEYS[1], 'deadline_at')
  if d and d ~= '' and tonumber(d) < now then return 'expired' end
end
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[2], 'worker', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 'running'
"""

# KEYS: job, leases, celery result key. ARGV: id, ttl, celery meta, then field/value pairs
# (including 'state'). A terminal job is left as it is: the first result wins.
FINISH = """
local s = redis.call('HGET', KEYS[1], 'state')
redis.call('ZREM', KEYS[2], ARGV[1])
if not s then return 'missing' end
if s ~= 'queued' and s ~= 'running' then return s end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return 'ok'
"""

# KEYS: job, celery result key. ARGV: id, now, ttl, celery meta for a revoked task, channel.
# A queued job is cancelled on the spot; a running one is asked to stop (its worker aborts it
# in the engine and records `cancelled`).
CANCEL = """
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 'missing' end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[2],
             'error', 'cancelled by the client')
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
  redis.call('PUBLISH', KEYS[2], ARGV[4])
  return 'cancelled'
end
if s == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', ARGV[5], ARGV[1])
  return 'cancelling'
end
return s
"""

# KEYS: job, leases. ARGV: id, lease expiry.
# A worker gives an admitted job back (shutdown, a passing error): the job turns `queued` and
# keeps a short lease until its republished message is confirmed (see RELEASE), so a worker
# dying in between leaves an expiring lease for the reaper, never a queued job with no message.
HANDBACK = """
local s = redis.call('HGET', KEYS[1], 'state')
if s ~= 'running' then return s or 'missing' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'queued'
"""

# KEYS: job, leases. ARGV: id, the lease score the caller saw.
# After a republish is confirmed: drop the lease if nobody took the job meanwhile (a worker
# that admitted the new copy holds a new lease, which stays). A running job whose lease
# expired (its worker died) turns `queued`, ready for its republished copy.
RELEASE = """
local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
if (not lease) or tonumber(lease) ~= tonumber(ARGV[2]) then return 'taken' end
redis.call('ZREM', KEYS[2], ARGV[1])
local s = redis.call('HGET', KEYS[1], 'state')
if s == 'running' then redis.call('HSET', KEYS[1], 'state', 'queued', 'worker', '') end
return 'released'
"""

_CELERY_STATES = {
    JobState.SUCCEEDED: "SUCCESS",
    JobState.FAILED: "FAILURE",
    JobState.CANCELLED: "REVOKED",
    JobState.EXPIRED: "REVOKED",
}


def celery_meta(job_id: str, state: JobState, result: Any, *, error: str | None = None) -> str:
    """The value Celery's Redis result backend stores, so `AsyncResult(id).get()` works."""
    if state is JobState.SUCCEEDED:
        payload = result
    elif state is JobState.FAILED:
        payload = {"exc_type": "JobFailedError", "exc_message": [error or "failed"],
                   "exc_module": "genq.errors"}
    else:
        payload = {"exc_type": "TaskRevokedError", "exc_message": [error or state.value],
                   "exc_module": "celery.exceptions"}
    return json.dumps({
        "status": _CELERY_STATES[state],
        "result": payload,
        "traceback": None,
        "children": [],
        "date_done": datetime.now(timezone.utc).isoformat(),
        "task_id": job_id,
    })


def new_record_fields(
    spec: JobSpec, *, job_id: str, tenant: str, enqueued_at: float, deadline_at: float | None
) -> dict[str, str]:
    """The hash of a job just accepted. The spec is kept so a job can be republished."""
    return {
        "id": job_id,
        "state": JobState.QUEUED.value,
        "model": spec.model,
        "priority": str(spec.priority),
        "tenant": tenant,
        "enqueued_at": repr(enqueued_at),
        "deadline_at": "" if deadline_at is None else repr(deadline_at),
        "attempts": "0",
        "cached": "0",
        "spec": spec.model_dump_json(exclude_defaults=True),
    }


def _opt_float(raw: str | None) -> float | None:
    return float(raw) if raw else None


def decode_record(raw: Mapping[str, str]) -> JobRecord:
    usage = raw.get("usage")
    return JobRecord(
        id=raw["id"],
        state=JobState(raw["state"]),
        model=raw.get("model", ""),
        priority=int(raw.get("priority", 0)),
        tenant=raw.get("tenant", ""),
        enqueued_at=float(raw["enqueued_at"]),
        started_at=_opt_float(raw.get("started_at")),
        finished_at=_opt_float(raw.get("finished_at")),
        deadline_at=_opt_float(raw.get("deadline_at")),
        worker=raw.get("worker") or None,
        attempts=int(raw.get("attempts", 0)),
        text=raw.get("text"),
        finish_reason=raw.get("finish_reason") or None,
        usage=Usage.model_validate_json(usage) if usage else None,
        error=raw.get("error") or None,
        cached=raw.get("cached") == "1",
    )


class JobStore:
    """Client-side access to job records (synchronous; workers use `workers.ledger`)."""

    def __init__(self, url: str, *, job_ttl: int) -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._job_ttl = job_ttl
        self._cancel = self._redis.register_script(CANCEL)

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    def close(self) -> None:
        self._redis.close()

    def create(self, records: Iterable[dict[str, str]]) -> None:
        """Write new records in one round trip. They live job_ttl plus however long they
        queue: the TTL is renewed when the job finishes."""
        pipe = self._redis.pipeline(transaction=False)
        for fields in records:
            key = names.job_key(fields["id"])
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self._job_ttl)
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
        for job_id, raw in zip(job_ids, self._run(pipe)):
            if not raw:
                raise NotFoundError(f"job {job_id}: not found")
            out.append(decode_record(raw))
        return out

    def cancel(self, job_id: str) -> str:
        meta = celery_meta(job_id, JobState.CANCELLED, None, error="cancelled by the client")
        try:
            outcome = self._cancel(
                keys=[names.job_key(job_id), names.celery_result_key(job_id)],
                args=[job_id, repr(time.time()), self._job_ttl, meta, names.CANCEL_CHANNEL],
            )
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        if outcome == "missing":
            raise NotFoundError(f"job {job_id}: not found")
        return str(outcome)

    def _run(self, pipe: Any) -> list[Any]:
        try:
            return pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
