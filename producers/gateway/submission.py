"""From requests to accepted jobs: the one path every endpoint submits through.

Validate everything first (nothing is published if one job is bad), then check the limits,
then submit through `producers.Client` (records, publisher confirms), then count, log and
audit. The tenant is the caller's; the priority is the job's own, else the X-Genq-Priority
header, else the gateway's default."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from genq.errors import (
    BrokerError,
    GenqError,
    PublishError,
    StoreError,
    ValidationError,
)
from genq.schema import JobSpec, parse_spec
from producers.gateway.auth import Caller
from producers.gateway.context import Gateway
from producers.gateway.errors import ApiError, unavailable

__all__ = ["PRIORITY_HEADER", "doomed_by_retry", "submit", "validate"]

log = logging.getLogger(__name__)

PRIORITY_HEADER = "X-Genq-Priority"


def validate(
    gw: Gateway, caller: Caller, jobs: Sequence[Any], *, priority: int | None, label: str = "jobs"
) -> list[JobSpec]:
    """Each job as the fleet will run it, or the first error naming its field (prefixed by
    `label[i].` when there are several): 404 for a model the fleet doesn't serve, 422 else."""
    limit = gw.settings.max_jobs_per_request
    if len(jobs) > limit:
        raise ApiError(
            422,
            f"{label}: {len(jobs)} jobs in one request is over the limit of "
            f"{limit} (GENQ_MAX_JOBS_PER_REQUEST)",
            param=label,
        )
    if not jobs:
        raise ApiError(422, f"{label}: no jobs given", param=label)
    specs = []
    default = gw.settings.default_priority if priority is None else priority
    for i, job in enumerate(jobs):
        where = f"{label}[{i}]." if len(jobs) > 1 else ""
        try:
            if not isinstance(job, dict):
                raise ValidationError(f"expected a JSON object, got {type(job).__name__}")
            fields = dict(job)
            fields.setdefault("priority", default)
            fields["tenant"] = caller.tenant_for(fields.get("tenant"))
            spec = parse_spec(fields)
            if spec.model not in gw.settings.models:
                declared = ", ".join(gw.settings.models) or "none (set GENQ_MODELS)"
                raise ApiError(
                    404,
                    f"{where}model: {spec.model!r} is not served by this fleet; models: {declared}",
                    param=f"{where}model",
                    code="model_not_found",
                )
            specs.append(gw.client.validate(spec))
        except ValidationError as exc:
            field = f"{where}{exc.field}" if exc.field else (where.rstrip(".") or None)
            raise ApiError(422, f"{where}{exc}", param=field) from None
    return specs


async def submit(
    gw: Gateway, caller: Caller, specs: list[JobSpec], *, api: str, check_limits: bool = True
) -> list[str]:
    """Submit validated jobs; their IDs, in order. 429 over a limit, 503 if the broker
    or Redis failed: then nothing was accepted (`Client.submit_many` removes the records of
    what it could not publish, and what was published anyway is cancelled here unless its
    idempotency key makes the retry find it)."""
    per_model = Counter(spec.model for spec in specs)
    try:
        if check_limits:
            await gw.limits.admit(caller.tenant, dict(per_model))
        ids = await gw.batcher.submit(specs)
    except PublishError as exc:
        # Some may have been accepted before the broker failed. The caller hears "not
        # accepted" and will retry, so those must not run too: cancel them, except the ones
        # with an idempotency key, which the retry finds again and so runs once.
        accepted = doomed_by_retry(specs, exc)
        if accepted:
            await gw.call(_cancel_all, gw, accepted)
            gw.audit.write(
                "job.cancel",
                tenant=caller.tenant,
                key=caller.key_id,
                client=caller.address,
                jobs=accepted,
                reason="the rest of the request was not published",
            )
        raise unavailable("the broker", exc) from None
    except BrokerError as exc:
        raise unavailable("the broker", exc) from None
    except (StoreError, RedisError) as exc:
        raise unavailable("redis", exc) from None
    gw.limits.accepted(caller.tenant, ids, time.time())
    for model, count in per_model.items():
        gw.metrics.jobs.labels(model, api).inc(count)
    gw.audit.write(
        "job.submit",
        api=api,
        tenant=caller.tenant,
        key=caller.key_id,
        client=caller.address,
        jobs=ids,
        models=sorted(per_model),
        priorities=sorted({s.priority for s in specs}),
    )
    return ids


def doomed_by_retry(specs: list[JobSpec], exc: PublishError) -> list[str]:
    """The accepted jobs of a failed request that its retry would submit a second time:
    those without an idempotency key."""
    return [
        job_id
        for job_id, i in zip(exc.accepted, exc.accepted_positions, strict=True)
        if not specs[i].idempotency_key
    ]


def _cancel_all(gw: Gateway, job_ids: list[str]) -> None:
    for job_id in job_ids:
        # Gone already, or Redis failing too: nothing more to do here.
        with contextlib.suppress(GenqError):
            gw.client.cancel(job_id)
