"""Backpressure: 429 with Retry-After when a tenant or a model has too much work queued.

Two different counts, each the cheapest sound one:

- A model's queue is the broker's: the ready messages of its level queues, all producers
  included (`BrokerProbe.depth`, a passive declare reused for ~1 s). No bookkeeping can
  drift, and jobs from the Python client or another gateway count as they should.
- A tenant's queued jobs can't be read off the broker (queues are per model and level), and
  a counter decremented when a job ends would need the worker to do it. So the gateway keeps
  a sorted set per tenant of the jobs it accepted, and prunes it lazily: while the set is
  under the limit its size is the answer (an upper bound of what is queued, so never too
  lenient); only when it reaches the limit are the members' states read, the ended ones
  removed and the queued ones counted. That count is reused for `queue_depth_ttl` seconds,
  plus whatever was added since, so a tenant hammering at its limit costs one prune a second.

Both are soft limits: concurrent requests may pass the same check together and overshoot by
what they carry. Jobs the Python client submits count for the model, not for the tenant."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from genq import names
from genq.schema import JobState
from genq.settings import GatewaySettings
from producers.gateway.broker import BrokerProbe
from producers.gateway.decoded import texts
from producers.gateway.errors import ApiError
from producers.gateway.metrics import Metrics

__all__ = ["Backpressure"]

log = logging.getLogger(__name__)

# Job states read per pipeline while pruning: big enough to be one round trip for most
# tenants, small enough not to stall Redis.
_PRUNE_CHUNK = 1000
_LIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass(slots=True)
class _Pruned:
    at: float
    queued: int
    size: int
    """The set's size after the prune: members added since count as queued."""


class Backpressure:
    def __init__(
        self,
        settings: GatewaySettings,
        redis: aioredis.Redis,
        broker: BrokerProbe,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._broker = broker
        self._metrics = metrics
        self._pruned: dict[str, _Pruned] = {}
        self._unsaved: dict[str, dict[str, float]] = {}
        """Jobs accepted but not yet in their tenant's set, by tenant."""
        self._saving: asyncio.Task[None] | None = None

    async def admit(self, tenant: str, per_model: dict[str, int]) -> None:
        """Raise 429 if `per_model` new jobs would take the tenant or a model over its limit."""
        limit = self._settings.tenant_queued_limit
        incoming = sum(per_model.values())
        if limit:
            queued = await self.tenant_queued(tenant, incoming=incoming)
            if queued + incoming > limit:
                self._refuse(
                    "tenant",
                    f"tenant {tenant!r} has {queued} jobs queued; "
                    f"{incoming} more would pass the limit of {limit} "
                    "(GENQ_TENANT_QUEUED_LIMIT)",
                )
        limit = self._settings.model_queued_limit
        if limit:
            for model, count in per_model.items():
                # A fresh reading is used on the loop; only a stale one costs a thread.
                depth = self._broker.cached_depth(model)
                if depth is None:
                    depth = await run_in_threadpool(self._broker.depth, model)
                if depth + count > limit:
                    self._refuse(
                        "model",
                        f"model {model!r} has {depth} jobs queued; {count} "
                        f"more would pass the limit of {limit} "
                        "(GENQ_MODEL_QUEUED_LIMIT)",
                    )

    def accepted(self, tenant: str, job_ids: list[str], now: float) -> None:
        """Count jobs the tenant just submitted. They are written with those of every request
        accepted meanwhile, in one pipeline (`_save`), and counted here until then."""
        if not job_ids or not self._settings.tenant_queued_limit:
            return
        self._unsaved.setdefault(tenant, {}).update(dict.fromkeys(job_ids, now))
        if self._saving is None or self._saving.done():
            self._saving = asyncio.get_running_loop().create_task(self._save())

    async def _save(self) -> None:
        while self._unsaved:
            batch = {tenant: dict(members) for tenant, members in self._unsaved.items()}
            pipe = self._redis.pipeline(transaction=False)
            for tenant, members in batch.items():
                key = names.tenant_queued_key(tenant)
                pipe.zadd(key, members)
                pipe.expire(key, self._settings.job_ttl)
            try:
                await pipe.execute()
            except RedisError as exc:  # the jobs are in: they go uncounted, not refused
                log.warning(
                    "%d tenants' new jobs not counted for their limits: %s", len(batch), exc
                )
            # Dropped only now: until written, they count through `_unsaved`.
            for tenant, members in batch.items():
                left = self._unsaved.get(tenant)
                if left is not None:
                    for job_id in members:
                        left.pop(job_id, None)
                    if not left:
                        del self._unsaved[tenant]

    async def tenant_queued(self, tenant: str, *, incoming: int = 0) -> int:
        """The tenant's queued jobs, exact enough to decide on `incoming` more."""
        key = names.tenant_queued_key(tenant)
        size = int(await self._redis.zcard(key)) + len(self._unsaved.get(tenant, ()))
        if size + incoming <= self._settings.tenant_queued_limit:
            return size
        now = time.monotonic()
        last = self._pruned.get(tenant)
        if last is not None and now - last.at < self._settings.queue_depth_ttl:
            return last.queued + max(0, size - last.size)
        queued, size = await self._prune(key)
        queued += len(self._unsaved.get(tenant, ()))  # accepted, not yet in the set
        self._pruned[tenant] = _Pruned(at=now, queued=queued, size=size)
        return queued

    async def _prune(self, key: str) -> tuple[int, int]:
        """Drop ended (or vanished) jobs from the set; returns (queued, size left)."""
        members = texts(await self._redis.zrange(key, 0, -1))
        queued, ended = 0, []
        for start in range(0, len(members), _PRUNE_CHUNK):
            chunk = members[start : start + _PRUNE_CHUNK]
            pipe = self._redis.pipeline(transaction=False)
            for job_id in chunk:
                pipe.hget(names.job_key(job_id), "state")
            for job_id, state in zip(chunk, await pipe.execute(), strict=True):
                if state == JobState.QUEUED.value:
                    queued += 1
                elif state not in _LIVE:
                    ended.append(job_id)
        if ended:
            await self._redis.zrem(key, *ended)
        return queued, len(members) - len(ended)

    def _refuse(self, limit: str, message: str) -> None:
        self._metrics.rejected.labels(limit).inc()
        raise ApiError(
            429,
            message,
            code=f"{limit}_queue_full",
            headers={"Retry-After": str(self._settings.retry_after)},
        )
