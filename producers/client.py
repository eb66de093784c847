"""The Python client: submit jobs, read their records, wait for results, cancel.

Submission is fire-and-forget: `submit` validates, writes the job record, publishes the task
message with confirms and returns the task ID at once. Results are read from Redis by ID."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from genq import names
from genq.cache import CacheStats, cache_key
from genq.demand import DemandCounter
from genq.errors import GenqError, PublishError, StoreError, TimeoutError  # noqa: A004 - genq's own
from genq.protocol import encode_task
from genq.schema import JobRecord, JobSpec, parse_spec
from genq.settings import ClientSettings
from genq.store import JobStore, new_record_fields
from genq.topology import TOP_TURN
from producers.publisher import OutgoingJob, Publisher
from producers.queues import queue_depths
from scheduler.turns import expected_tokens, turn

__all__ = ["Client"]

log = logging.getLogger(__name__)

# A follower promoted when the client cancels its leader holds a lease for this many publish
# timeouts (the publisher tries a few connections), then a worker's reaper republishes it.
_PROMOTE_LEASE_FACTOR = 4

# Polling for a result starts fast (a short job is done in tens of ms) and backs off so
# thousands of waiting clients don't hammer Redis.
_POLL_FIRST = 0.01
_POLL_MAX = 0.5


class Client:
    """`Client()` reads `GENQ_*` settings; pass `settings=` or field overrides to change them."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        connection_name: str | None = None,
        **overrides: Any,
    ) -> None:
        """`connection_name` names this client's Redis connections (CLIENT LIST)."""
        base = settings or ClientSettings()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self.store = JobStore(
            self.settings.redis_url,
            self.settings,
            job_ttl=self.settings.job_ttl,
            client_name=connection_name,
        )
        self._demand = DemandCounter(self.store.redis, horizon=self.settings.fair_horizon)
        self._publisher = Publisher(
            self.settings.broker_url,
            self.settings,
            levels=self.settings.levels,
            timeout=self.settings.publish_timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    def close(self) -> None:
        self._publisher.close()
        self.store.close()

    # -- submitting -------------------------------------------------------------------------

    def submit(self, prompt: str | JobSpec | None = None, **fields: Any) -> str:
        """Submit one job (`prompt` and keyword fields of `JobSpec`, or a `JobSpec`)."""
        if isinstance(prompt, JobSpec):
            data: JobSpec | dict[str, Any] = parse_spec(prompt, **fields)
        else:
            data = {**fields, "prompt": prompt} if prompt is not None else fields
        return self.submit_many([data])[0]

    def submit_many(self, requests: Iterable[JobSpec | dict[str, Any]]) -> list[str]:
        """Submit many jobs; every one is confirmed by the broker or this raises.

        All are validated before anything is written, so an invalid request publishes
        nothing. A deterministic request may be answered from the result cache or join an
        identical job in flight (see genq/cache.py); it is then not published, and its record
        is `succeeded` (`cached`) at once or when the identical job ends.

        On `PublishError` (the broker stayed away past the publish timeout), `.accepted`
        holds the IDs that were accepted all the same (they will run), and `.unaccepted` the
        positions of the requests that were not (no record, no job: submit them again; with
        idempotency keys, resubmitting the whole batch is safe too)."""
        specs = [self.validate(r) for r in requests]
        now = time.time()
        ids = [uuid.uuid4().hex for _ in specs]
        ids, fresh = self._claim_idempotency(specs, ids)
        records: list[dict[str, str]] = []
        pending: dict[str, tuple[JobSpec, float | None]] = {}
        for i in fresh:
            spec, job_id = specs[i], ids[i]
            tenant = _tenant(spec)
            deadline_at = spec.deadline_at(now)
            records.append(
                new_record_fields(
                    spec,
                    job_id=job_id,
                    tenant=tenant,
                    enqueued_at=now,
                    deadline_at=deadline_at,
                    cache_key=cache_key(spec) if self.settings.result_cache else None,
                    cache_ttl=self.settings.cache_ttl,
                    cache_max_bytes=self.settings.cache_max_bytes,
                )
            )
            pending[job_id] = (spec, deadline_at)
        # The record goes first: a worker that receives the message must find it.
        created = self.store.create(records)
        outgoing: list[OutgoingJob] = []
        for fields, outcome in zip(records, created, strict=True):
            if outcome.outcome in ("new", "leader"):  # not answered, not following
                job_id = fields["id"]
                spec, deadline_at = pending[job_id]
                headers, body = encode_task(
                    spec, job_id=job_id, enqueued_at=now, deadline_at=deadline_at
                )
                outgoing.append(OutgoingJob(job_id, spec.model, spec.priority, headers, body))
        if self.settings.policy == "fair":
            outgoing = self._take_turns(outgoing, [pending[j.job_id][0] for j in outgoing], now)
        try:
            if outgoing:
                self._publisher.publish(outgoing)
        except BaseException as exc:
            # Not confirmed is not accepted: remove those records so nobody waits on a job
            # without a message, free their idempotency keys so a retry publishes them
            # afresh, and say exactly which requests those were.
            confirmed = set(exc.confirmed) if isinstance(exc, PublishError) else set()
            lost = [job.job_id for n, job in enumerate(outgoing) if n not in confirmed]
            # Followers in this batch of a leader that was lost go with it (after it).
            lost_set = set(lost)
            lost += [f["id"] for f, c in zip(records, created, strict=True) if c.leader in lost_set]
            lost_set.update(lost)
            self.store.abandon(lost, error=f"not published: {exc}")
            self._release_idempotency([specs[i] for i in fresh if ids[i] in lost_set])
            positions = [i for i in fresh if ids[i] not in lost_set]
            accepted = [ids[i] for i in positions]
            unaccepted = [i for i in fresh if ids[i] in lost_set]
            if isinstance(exc, PublishError):
                exc.accepted, exc.unaccepted = accepted, unaccepted
                exc.accepted_positions = positions
                raise
            if not isinstance(exc, Exception):  # an interrupt: cleaned up, let it through
                raise
            # Anything else (a bug) must not pass for success either.
            raise PublishError(
                f"publishing failed: {exc!r}",
                accepted=accepted,
                unaccepted=unaccepted,
                accepted_positions=positions,
            ) from exc
        return ids

    def validate(self, request: JobSpec | dict[str, Any]) -> JobSpec:
        """The request as this fleet will run it, or `ValidationError` naming the field."""
        spec = parse_spec(request)
        # Filled in here, once: the job's message then names its tenant, so the demand
        # counters here and the worker's fair share count it under the same name.
        defaults: dict[str, Any] = {}
        if spec.max_tokens is None:
            defaults["max_tokens"] = self.settings.default_max_tokens
        if spec.tenant is None:
            defaults["tenant"] = self.settings.default_tenant
        if defaults:
            spec = spec.model_copy(update=defaults)
        spec.check(self.settings)
        return spec

    def _take_turns(
        self, outgoing: list[OutgoingJob], specs: list[JobSpec], now: float
    ) -> list[OutgoingJob]:
        """Each job's turn in its level queue from its tenant's demand (scheduler/turns.py),
        charging the batch to the tenants' counters, model by model."""
        turns = [TOP_TURN] * len(outgoing)
        by_model: dict[str, list[int]] = {}
        for n, job in enumerate(outgoing):
            by_model.setdefault(job.model, []).append(n)
        for model, positions in by_model.items():
            charges = [
                (_tenant(specs[n]), expected_tokens(specs[n].prompt_chars(), specs[n].max_tokens))
                for n in positions
            ]
            for n, before in zip(positions, self._demand.charge(model, charges, now), strict=True):
                turns[n] = turn(before, self.settings.fair_quantum, TOP_TURN)
        return [dataclasses.replace(job, turn=t) for job, t in zip(outgoing, turns, strict=True)]

    def _claim_idempotency(
        self, specs: list[JobSpec], ids: list[str]
    ) -> tuple[list[str], list[int]]:
        """Swap in the existing ID for every key seen before; return the indexes to publish."""
        keyed = [i for i, s in enumerate(specs) if s.idempotency_key]
        if not keyed:
            return ids, list(range(len(specs)))
        pipe = self.store.redis.pipeline(transaction=False)
        for i in keyed:
            key = self._idem_key(specs[i])
            pipe.set(key, ids[i], nx=True, ex=self.settings.idempotency_ttl)
            pipe.get(key)
        replies = pipe.execute()
        ids = list(ids)
        skip = set()
        for n, i in enumerate(keyed):
            was_set, current = replies[2 * n], replies[2 * n + 1]
            if not was_set:
                ids[i] = current
                skip.add(i)
        return ids, [i for i in range(len(specs)) if i not in skip]

    def _release_idempotency(self, specs: list[JobSpec]) -> None:
        keys = [self._idem_key(s) for s in specs if s.idempotency_key]
        if keys:
            self.store.redis.delete(*keys)

    def _idem_key(self, spec: JobSpec) -> str:
        assert spec.idempotency_key is not None
        return names.idempotency_key(_tenant(spec), spec.idempotency_key)

    # -- reading ----------------------------------------------------------------------------

    def status(self, job_id: str) -> JobRecord:
        """The job record now; `NotFoundError` for an unknown ID."""
        return self.store.get(job_id)

    def queue_estimate(self, record: JobRecord) -> dict[str, Any]:
        """For a queued job: its level, its wait so far and the depth of every level's queue.
        `ahead_at_most` counts the other jobs at its level and above: an upper bound, since
        RabbitMQ can't say which of its own level's jobs are behind it, and a higher-level
        job that arrived more than (α/β)·Δp seconds after it is behind it too."""
        depths = queue_depths(self.settings, record.model)
        return {
            "level": record.priority,
            "waited_s": round(record.wait_seconds(), 3),
            "depth_by_level": depths,
            # Its own message is in its level's count.
            "ahead_at_most": max(
                0, sum(n for level, n in depths.items() if level >= record.priority) - 1
            ),
            "estimate": True,
        }

    def status_many(self, job_ids: list[str]) -> list[JobRecord]:
        return self.store.get_many(job_ids)

    def result(self, job_id: str, *, wait: bool = True, timeout: float | None = None) -> JobRecord:
        """The job record, after waiting (if `wait`) until it ends; `TimeoutError` past
        `timeout` seconds. A failed, cancelled or expired job is returned, not raised: its
        `state` and `error` say what happened."""
        return self.wait_many([job_id], timeout=timeout if wait else 0)[0]

    def wait_many(
        self,
        job_ids: list[str],
        *,
        timeout: float | None = None,
        on_done: Any = None,
    ) -> list[JobRecord]:
        """Wait until every job ends (polling pipelined reads); `on_done(record)` is called
        once per job as it ends, for progress bars."""
        deadline = None if timeout is None else time.monotonic() + timeout
        records: dict[str, JobRecord] = {}
        pending = list(dict.fromkeys(job_ids))
        delay = _POLL_FIRST
        while True:
            try:
                polled = self.store.get_many(pending)
            except StoreError as exc:
                # Redis restarting: its records persist (AOF), so keep waiting and read
                # again once it is back; past the timeout, TimeoutError as for any wait.
                log.warning("reading results failed (%s); retrying", exc)
                polled = []
            for record in polled:
                if record.done:
                    records[record.id] = record
                    if on_done is not None:
                        on_done(record)
            pending = [i for i in pending if i not in records]
            if not pending:
                return [records[i] for i in job_ids]
            if deadline is not None and time.monotonic() >= deadline:
                if timeout == 0:
                    current = {r.id: r for r in self.store.get_many(pending)}
                    return [records.get(i) or current[i] for i in job_ids]
                raise TimeoutError(
                    f"{len(pending)} of {len(job_ids)} jobs not done after {timeout} s"
                )
            time.sleep(
                delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
            )
            delay = min(delay * 1.5, _POLL_MAX)

    def cancel(self, job_id: str) -> str:
        """Cancel a job: a queued one becomes `cancelled` and never runs; a running one is
        aborted in the engine by its worker. Returns `cancelled`, `cancelling`, or the
        terminal state the job had already reached. Jobs waiting on this one's result (single
        flight) are not cancelled: one of them runs in its place."""
        lease = time.time() + _PROMOTE_LEASE_FACTOR * self.settings.publish_timeout
        outcome, promoted = self.store.cancel_job(job_id, promote_lease=lease)
        if promoted is not None:
            self._publish_promoted(promoted, lease)
        return outcome

    def cache_stats(self) -> CacheStats:
        """The fleet's result-cache counters: hits, misses, followers, and the hit rate."""
        return self.store.cache_stats()

    def _publish_promoted(self, job_id: str, lease: float) -> None:
        try:
            message = self.store.task_message(job_id)
            headers, body = encode_task(
                message.spec,
                job_id=job_id,
                enqueued_at=message.enqueued_at,
                deadline_at=message.deadline_at,
            )
            self._publisher.publish(
                [OutgoingJob(job_id, message.spec.model, message.spec.priority, headers, body)]
            )
            self.store.release(job_id, lease)
        except (GenqError, KeyError, ValueError) as exc:  # a broker or store error, a bad record
            # The cancel itself is done. The follower keeps its lease; when it expires a
            # worker's reaper publishes it, as it does for the jobs of a worker that died.
            log.warning(
                "job %s: publishing it in place of a cancelled job failed (%s); "
                "a worker will republish it",
                job_id,
                exc,
            )


def _tenant(spec: JobSpec) -> str:
    """The tenant `validate` filled in."""
    assert spec.tenant is not None, "a spec that did not go through Client.validate"
    return spec.tenant
