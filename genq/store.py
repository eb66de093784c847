"""The Redis job store: one hash per job, plus Celery's result key so `AsyncResult` works.

Every state change that must be atomic (submit of a cacheable job, admit, finish, cancel,
republish) is a Lua script here, so the client and the worker run the same rules: a terminal
state is final and the first result stored wins, which is what makes "exactly one stored
result per job" hold when a job runs twice after a worker died. The result cache and single
flight live in the same scripts (see "Result cache and single flight" below)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

import redis

from genq import names
from genq.cache import CacheStats
from genq.errors import NotFoundError, StoreError, ValidationError
from genq.protocol import TaskMessage
from genq.schema import JobRecord, JobSpec, JobState, Usage
from genq.tls import redis_from_url

__all__ = [
    "ABANDON",
    "ADMIT",
    "CANCEL",
    "FINISH",
    "HANDBACK",
    "JobStore",
    "RELEASE",
    "SCRIPT_PREFIXES",
    "SUBMIT",
    "Created",
    "celery_meta",
    "date_done",
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

# -- Result cache and single flight ------------------------------------------------------
# A cacheable job (a deterministic request, see genq/cache.py) carries `cache_key` in its
# record. SUBMIT answers it from a stored result, or makes it a follower of an identical job
# already queued or running (the flight's leader: no message is published for a follower),
# or makes it the leader of a new flight. When a leader ends, FINISH (or CANCEL) settles its
# flight in the same script, so no follower is ever left queued with neither a leader nor a
# message:
# - succeeded: the result is stored (cache_ttl, cache_max_bytes from the record) and every
#   follower still queued gets it (state succeeded, cached), with its own Celery result;
# - failed: every follower fails with the leader's error. The same request fails the same
#   way (a prompt too long for the context; an engine error met max_attempts times), so
#   running it again for each follower would only repeat the failure;
# - cancelled or expired: that was the leader's own business, not its followers'. The first
#   follower still queued is promoted: it becomes the leader of the others and is given a
#   lease in genq:leases with the expiry the caller passed. The caller publishes its message
#   and releases the lease (RELEASE); if it dies first, the lease expires and a worker's
#   reaper republishes the job, as for any job whose worker died.
# Cancelling a follower cancels only that follower.
#
# The scripts reach other jobs' keys (a leader's followers) by the prefixes in
# SCRIPT_PREFIXES, always its first six arguments: fine on one Redis, which is what genq's
# job store is (a Redis Cluster would need the flight's keys in one hash slot).
_FLIGHT_LUA = r"""
local P = {job = ARGV[1], celery = ARGV[2], cache = ARGV[3], flight = ARGV[4],
           followers = ARGV[5], leases = ARGV[6]}

-- What Celery's Redis result backend stores (see celery_meta), for a job ID of our own.
local function meta(id, status, payload, date)
  return '{"status": "' .. status .. '", "result": ' .. payload ..
         ', "traceback": null, "children": [], "date_done": ' .. cjson.encode(date) ..
         ', "task_id": ' .. cjson.encode(id) .. '}'
end

local function store_meta(id, value, ttl)
  redis.call('SET', P.celery .. id, value, 'EX', ttl)
  redis.call('PUBLISH', P.celery .. id, value)
end

-- Job `id` just ended in `state`: hand its flight on. Returns the promoted follower's ID, or
-- false. `result` is the Celery result JSON of a success.
local function settle(id, state, now, date, ttl, lease, result)
  local f = redis.call('HMGET', P.job .. id, 'cache_key', 'leader', 'cache_ttl',
                       'cache_max_bytes', 'text', 'finish_reason', 'usage', 'error')
  if f[2] and f[2] ~= '' then  -- a follower: it leaves its leader's list, nothing more
    redis.call('LREM', P.followers .. f[2], 0, id)
    return false
  end
  if not f[1] or f[1] == '' then return false end
  local list = P.followers .. id
  local flight = P.flight .. f[1]
  if state == 'succeeded' then
    local text, reason, usage = f[5] or '', f[6] or '', f[7] or ''
    if result == '' then result = 'null' end
    local cache_ttl = tonumber(f[3]) or 0
    if cache_ttl > 0 and #result <= (tonumber(f[4]) or 0) then
      local entry = P.cache .. f[1]
      redis.call('HSET', entry, 'text', text, 'finish_reason', reason, 'usage', usage,
                 'result', result)
      redis.call('EXPIRE', entry, cache_ttl)
    end
    for _, fid in ipairs(redis.call('LRANGE', list, 0, -1)) do
      if redis.call('HGET', P.job .. fid, 'state') == 'queued' then
        redis.call('HSET', P.job .. fid, 'state', 'succeeded', 'cached', '1', 'text', text,
                   'finish_reason', reason, 'usage', usage, 'finished_at', now)
        redis.call('EXPIRE', P.job .. fid, ttl)
        store_meta(fid, meta(fid, 'SUCCESS', result, date), ttl)
      end
    end
  elseif state == 'failed' then
    local err = 'identical job ' .. id .. ' failed: ' .. (f[8] or 'failed')
    local payload = '{"exc_type": "JobFailedError", "exc_message": [' .. cjson.encode(err) ..
                    '], "exc_module": "genq.errors"}'
    for _, fid in ipairs(redis.call('LRANGE', list, 0, -1)) do
      if redis.call('HGET', P.job .. fid, 'state') == 'queued' then
        redis.call('HSET', P.job .. fid, 'state', 'failed', 'error', err, 'finished_at', now)
        redis.call('EXPIRE', P.job .. fid, ttl)
        store_meta(fid, meta(fid, 'FAILURE', payload, date), ttl)
      end
    end
  else  -- cancelled or expired
    local promoted = false
    while not promoted do
      local fid = redis.call('LPOP', list)
      if not fid then break end
      if redis.call('HGET', P.job .. fid, 'state') == 'queued' then promoted = fid end
    end
    if promoted then
      redis.call('HSET', P.job .. promoted, 'leader', '')
      redis.call('ZADD', P.leases, lease, promoted)
      local rest = redis.call('LRANGE', list, 0, -1)
      if #rest > 0 then
        redis.call('RENAME', list, P.followers .. promoted)
        for _, fid in ipairs(rest) do
          if redis.call('HGET', P.job .. fid, 'state') == 'queued' then
            redis.call('HSET', P.job .. fid, 'leader', promoted)
          end
        end
      end
      -- A flight taken over by a more urgent leader (see SUBMIT) stays with that one.
      if redis.call('GET', flight) == id then
        redis.call('SET', flight, promoted, 'EX', ttl)
      end
      return promoted
    end
  end
  redis.call('DEL', list)
  if redis.call('GET', flight) == id then redis.call('DEL', flight) end
  return false
end
"""

# KEYS: job, cache entry, flight, celery result key, cache stats. ARGV: the prefixes, then id,
# ttl, now, date_done, then field/value pairs of the new record (with cache_key, priority).
# Returns {outcome, leader}: 'hit' (the record is created succeeded, cached, with the stored
# result), 'follower' (of leader: publish nothing) or 'leader' (publish it).
# A queued leader less urgent than the newcomer is not followed: the newcomer would wait at
# the leader's level, behind work it outranks. It leads the flight from then on instead (the
# old leader keeps the followers it has).
SUBMIT = _FLIGHT_LUA + r"""
local id, ttl = ARGV[7], ARGV[8]
local hit = redis.call('HMGET', KEYS[2], 'text', 'finish_reason', 'usage', 'result')
redis.call('HSET', KEYS[1], unpack(ARGV, 11))
redis.call('EXPIRE', KEYS[1], ttl)
if hit[4] then
  redis.call('HSET', KEYS[1], 'state', 'succeeded', 'cached', '1', 'text', hit[1] or '',
             'finish_reason', hit[2] or '', 'usage', hit[3] or '', 'finished_at', ARGV[9])
  store_meta(id, meta(id, 'SUCCESS', hit[4], ARGV[10]), ttl)
  redis.call('HINCRBY', KEYS[5], 'hits', 1)
  return {'hit', ''}
end
local leader = redis.call('GET', KEYS[3])
if leader then
  local l = redis.call('HMGET', P.job .. leader, 'state', 'priority')
  local mine = tonumber(redis.call('HGET', KEYS[1], 'priority')) or 0
  if l[1] == 'running' or (l[1] == 'queued' and mine <= (tonumber(l[2]) or 0)) then
    redis.call('HSET', KEYS[1], 'leader', leader)
    redis.call('RPUSH', P.followers .. leader, id)
    redis.call('EXPIRE', P.followers .. leader, ttl)
    redis.call('HINCRBY', KEYS[5], 'followers', 1)
    return {'follower', leader}
  end
end
redis.call('SET', KEYS[3], id, 'EX', ttl)
redis.call('HINCRBY', KEYS[5], 'misses', 1)
return {'leader', ''}
"""

# KEYS: job. ARGV: the prefixes, then id, now, ttl, date_done, error.
# A job whose message the broker never confirmed: the record goes; a leader's followers fail
# with the error (the broker is in trouble: publishing one of them would fail as well).
ABANDON = _FLIGHT_LUA + r"""
local id = ARGV[7]
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
redis.call('HSET', KEYS[1], 'error', ARGV[11])
settle(id, 'failed', ARGV[8], ARGV[10], ARGV[9], ARGV[8], '')
redis.call('DEL', KEYS[1])
return 'ok'
"""

# KEYS: job, leases, celery result key. ARGV: the prefixes, then id, ttl, celery meta, now,
# date_done, result JSON ('' unless succeeded), lease expiry for a promoted follower, then
# field/value pairs (including 'state'). A terminal job is left as it is: the first result
# wins. Returns 'ok', 'promoted' (a follower now leads the flight: publish it, see above),
# 'missing', or the state the job already had.
FINISH = _FLIGHT_LUA + r"""
local id, ttl = ARGV[7], ARGV[8]
local s = redis.call('HGET', KEYS[1], 'state')
redis.call('ZREM', KEYS[2], id)
if not s then return 'missing' end
if s ~= 'queued' and s ~= 'running' then return s end
redis.call('HSET', KEYS[1], unpack(ARGV, 14))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[3], ARGV[9], 'EX', ttl)
redis.call('PUBLISH', KEYS[3], ARGV[9])
local state = redis.call('HGET', KEYS[1], 'state')
if settle(id, state, ARGV[10], ARGV[11], ttl, ARGV[13], ARGV[12]) then return 'promoted' end
return 'ok'
"""

# KEYS: job, celery result key. ARGV: the prefixes, then id, now, ttl, celery meta for a
# revoked task, cancel channel, date_done, lease expiry for a promoted follower.
# A queued job is cancelled on the spot; a running one is asked to stop (its worker aborts it
# in the engine and records `cancelled`). Returns {outcome, promoted follower or ''}.
CANCEL = _FLIGHT_LUA + r"""
local id = ARGV[7]
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return {'missing', ''} end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[8],
             'error', 'cancelled by the client')
  redis.call('EXPIRE', KEYS[1], ARGV[9])
  redis.call('SET', KEYS[2], ARGV[10], 'EX', ARGV[9])
  redis.call('PUBLISH', KEYS[2], ARGV[10])
  return {'cancelled', settle(id, 'cancelled', ARGV[8], ARGV[12], ARGV[9], ARGV[13], '') or ''}
end
if s == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('PUBLISH', ARGV[11], id)
  return {'cancelling', ''}
end
return {s, ''}
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

# KEYS: job, celery result key. A failed job goes back to queued for another try (genq dead
# requeue): its error, end time, attempts and Celery result are cleared.
REVIVE = """
local s = redis.call('HGET', KEYS[1], 'state')
if s ~= 'failed' then return s or 'missing' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', '0', 'worker', '')
redis.call('HDEL', KEYS[1], 'error', 'finished_at', 'started_at')
redis.call('DEL', KEYS[2])
return 'queued'
"""

_CELERY_STATES = {
    JobState.SUCCEEDED: "SUCCESS",
    JobState.FAILED: "FAILURE",
    JobState.CANCELLED: "REVOKED",
    JobState.EXPIRED: "REVOKED",
}


SCRIPT_PREFIXES = (names.JOB_PREFIX, names.CELERY_RESULT_PREFIX, names.CACHE_PREFIX,
                   names.FLIGHT_PREFIX, names.FOLLOWERS_PREFIX, names.LEASES)
"""The first arguments of SUBMIT, FINISH, CANCEL and ABANDON: the key names they build."""


def date_done() -> str:
    """Celery's `date_done`: now, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat()


def celery_meta(job_id: str, state: JobState, result: Any, *, error: str | None = None,
                date: str | None = None) -> str:
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
        "date_done": date or date_done(),
        "task_id": job_id,
    })


def new_record_fields(
    spec: JobSpec, *, job_id: str, tenant: str, enqueued_at: float, deadline_at: float | None,
    cache_key: str | None = None, cache_ttl: int = 0, cache_max_bytes: int = 0,
) -> dict[str, str]:
    """The hash of a job just accepted. The spec is kept so a job can be republished. A
    cacheable job carries its cache key and the submitter's cache settings, which the worker
    that runs it applies when it stores the result."""
    fields = {
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
    if cache_key is not None:
        fields.update(cache_key=cache_key, cache_ttl=str(cache_ttl),
                      cache_max_bytes=str(cache_max_bytes))
    return fields


class Created(NamedTuple):
    """What `JobStore.create` made of a new record."""

    outcome: str
    """`new` (not cacheable) or `leader` (the first of its kind): publish it; `follower`
    (an identical job is queued or running) or `hit` (a stored result answered it): don't."""
    leader: str | None = None
    """A follower's leader."""


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

    def __init__(self, url: str, *, job_ttl: int, client_name: str | None = None) -> None:
        self._redis = redis_from_url(url, decode_responses=True, client_name=client_name)
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
                pipe.hset(key, mapping=fields)
                pipe.expire(key, self._job_ttl)
                continue
            args: list[Any] = [*SCRIPT_PREFIXES, job_id, self._job_ttl, now, date]
            for pair in fields.items():
                args += pair
            self._submit(keys=[key, names.cache_entry_key(digest), names.flight_key(digest),
                               names.celery_result_key(job_id), names.CACHE_STATS],
                         args=args, client=pipe)
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
            self._abandon(keys=[names.job_key(job_id)],
                          args=[*SCRIPT_PREFIXES, job_id, now, self._job_ttl, date, error],
                          client=pipe)
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

    def revive(self, job_id: str) -> None:
        """Put a failed job back to `queued` (its message is republished by the caller)."""
        outcome = self._revive(keys=[names.job_key(job_id), names.celery_result_key(job_id)])
        if outcome == "missing":
            raise NotFoundError(f"job {job_id}: not found")
        if outcome != "queued":
            raise ValidationError(f"job {job_id}: is {outcome}, only a failed job is requeued")

    def task_message(self, job_id: str) -> TaskMessage:
        """The message that runs a job, rebuilt from its record (to republish it)."""
        try:
            raw = self._redis.hgetall(names.job_key(job_id))
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        if not raw:
            raise NotFoundError(f"job {job_id}: not found")
        return TaskMessage(
            job_id=job_id,
            spec=JobSpec.model_validate_json(raw["spec"]),
            enqueued_at=float(raw["enqueued_at"]),
            deadline_at=_opt_float(raw.get("deadline_at")),
            attempts=int(raw.get("attempts", 0)),
        )

    def cancel(self, job_id: str) -> str:
        """Cancel a job; returns `cancelled`, `cancelling` or the state it already had."""
        return self.cancel_job(job_id)[0]

    def cancel_job(self, job_id: str, *, promote_lease: float | None = None
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
                keys=[names.job_key(job_id), names.celery_result_key(job_id)],
                args=[*SCRIPT_PREFIXES, job_id, repr(now), self._job_ttl, meta,
                      names.CANCEL_CHANNEL, date_done(), lease],
            )
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        if outcome == "missing":
            raise NotFoundError(f"job {job_id}: not found")
        return str(outcome), str(promoted) or None

    def release(self, job_id: str, lease: float) -> str:
        """Drop a promoted job's lease once its message is published (see RELEASE)."""
        try:
            return str(self._release(keys=[names.job_key(job_id), names.LEASES],
                                     args=[job_id, repr(lease)]))
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc

    def cache_stats(self) -> CacheStats:
        """The result cache's counters (every producer's): hits, misses, followers."""
        try:
            raw = self._redis.hgetall(names.CACHE_STATS)
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        return CacheStats(hits=int(raw.get("hits", 0)), misses=int(raw.get("misses", 0)),
                          followers=int(raw.get("followers", 0)))

    def _run(self, pipe: Any) -> list[Any]:
        try:
            return pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
