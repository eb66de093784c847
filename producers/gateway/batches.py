"""OpenAI's Batch API on genq: a batch is a file of requests, each run as a genq job at the
batch priority level (GENQ_BATCH_PRIORITY), with the batch's window as its deadline.

    POST /v1/batches                 {input_file_id, endpoint, completion_window, metadata}
    GET  /v1/batches/{id}            the batch: status, request counts, output files
    GET  /v1/batches                 the tenant's batches, newest first
    POST /v1/batches/{id}/cancel

The input is checked whole when the batch is created: a bad line fails the batch (status
`failed`, `errors` naming each bad line) and nothing runs; otherwise every request is
submitted at once and the batch is `in_progress`. There is no batch daemon: a batch moves
on when it is read. Reading counts its jobs' states; once all have ended, the gateway that
reads it (under a lock in Redis, so once) writes the output and error files and the batch
is `completed` (or `cancelled`, or `expired`). A window that closes first cancels what has
not run. Clients poll a batch anyway, so it is never read less often than it is waited on."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, cast

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticError
from starlette.concurrency import run_in_threadpool

from genq import names
from genq.schema import TERMINAL_STATES, JobSpec, JobState
from genq.store import decode_record
from producers.gateway.auth import Caller, caller
from producers.gateway.batchlines import (
    ENDPOINTS,
    InputLine,
    LineError,
    output_line,
    parse_input,
    window_seconds,
)
from producers.gateway.context import Gateway, gateway_of
from producers.gateway.decoded import text_hash, texts
from producers.gateway.errors import ApiError, request_error
from producers.gateway.files import FileStore
from producers.gateway.submission import submit, validate
from producers.gateway.wire import ChatRequest, CompletionRequest, chat_jobs, completion_jobs

__all__ = ["router"]

router = APIRouter(tags=["batch"])

# Records read per pipeline while counting or finishing a batch.
_CHUNK = 1000
# Long enough to write a 50,000-line batch's files; a gateway that died holding it frees the
# batch for another after this.
_FINALIZE_LOCK_SECONDS = 300
_MAX_ERRORS_SHOWN = 100
_ENDED = {s.value for s in TERMINAL_STATES}
_TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


class BatchCreate(BaseModel):
    input_file_id: str
    endpoint: str = Field(description="/v1/chat/completions or /v1/completions")
    completion_window: str = Field(
        "24h", description="Hours, e.g. 24h: what has not run by then is cancelled"
    )
    metadata: dict[str, str] | None = Field(None, description="Up to 16 pairs")


class BatchStore:
    def __init__(self, redis: aioredis.Redis, *, ttl: int) -> None:
        self.redis = redis
        self._ttl = ttl

    async def create(self, fields: dict[str, str], requests: list[tuple[str, str]]) -> None:
        batch_id, tenant = fields["id"], fields["tenant"]
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(names.batch_key(batch_id), mapping=cast("dict[Any, Any]", fields))
        pipe.expire(names.batch_key(batch_id), self._ttl)
        key = names.batch_requests_key(batch_id)
        for start in range(0, len(requests), _CHUNK):
            pipe.rpush(key, *[json.dumps(r) for r in requests[start : start + _CHUNK]])
        pipe.expire(key, self._ttl)
        pipe.zadd(names.tenant_batches_key(tenant), {batch_id: float(fields["created_at"])})
        pipe.expire(names.tenant_batches_key(tenant), self._ttl)
        await pipe.execute()

    async def get(self, batch_id: str, who: Caller) -> dict[str, str]:
        raw = text_hash(await self.redis.hgetall(names.batch_key(batch_id)))
        if not raw or not who.sees(raw.get("tenant", "")):
            raise ApiError(404, f"batch {batch_id}: not found", param="batch_id", code="not_found")
        return dict(raw)

    async def update(self, batch_id: str, **fields: Any) -> None:
        await self.redis.hset(
            names.batch_key(batch_id), mapping={k: str(v) for k, v in fields.items()}
        )

    async def requests(self, batch_id: str) -> list[tuple[str, str]]:
        key = names.batch_requests_key(batch_id)
        raw = texts(await self.redis.lrange(key, 0, -1))
        return [(str(c), str(j)) for c, j in map(json.loads, raw)]

    async def ids(self, tenant: str) -> list[str]:
        return texts(await self.redis.zrevrange(names.tenant_batches_key(tenant), 0, -1))


def as_object(raw: dict[str, str]) -> dict[str, Any]:
    """A batch as OpenAI shows it."""

    def opt_int(name: str) -> int | None:
        value = raw.get(name)
        return int(float(value)) if value else None

    return {
        "id": raw["id"],
        "object": "batch",
        "endpoint": raw["endpoint"],
        "errors": json.loads(raw["errors"]) if raw.get("errors") else None,
        "input_file_id": raw["input_file_id"],
        "completion_window": raw["completion_window"],
        "status": raw["status"],
        "output_file_id": raw.get("output_file_id") or None,
        "error_file_id": raw.get("error_file_id") or None,
        **{name: opt_int(name) for name in _TIMES},
        "request_counts": {
            "total": int(raw.get("total", 0)),
            "completed": int(raw.get("completed", 0)),
            "failed": int(raw.get("failed", 0)),
        },
        "metadata": json.loads(raw["metadata"]) if raw.get("metadata") else None,
    }


def stores(request: Request) -> tuple[Gateway, BatchStore, FileStore]:
    gw = gateway_of(request)
    return (
        gw,
        BatchStore(gw.redis, ttl=gw.settings.batch_ttl),
        FileStore(gw.redis, ttl=gw.settings.batch_ttl),
    )


Stores = Annotated[tuple[Gateway, BatchStore, FileStore], Depends(stores)]
Who = Annotated[Caller, Depends(caller)]


@router.post(
    "/v1/batches",
    responses={
        404: {"description": "No such input file"},
        422: {"description": "Invalid batch"},
        429: {"description": "Too many jobs queued"},
    },
)
async def create_batch(body: BatchCreate, both: Stores, who: Who) -> dict[str, Any]:
    """Create a batch from an uploaded file and start it."""
    gw, batches, files = both
    if body.endpoint not in ENDPOINTS:
        raise ApiError(
            422,
            f"endpoint: {body.endpoint!r} is not one of {', '.join(ENDPOINTS)}",
            param="endpoint",
        )
    try:
        window = window_seconds(body.completion_window)
    except ValueError as exc:
        raise ApiError(422, str(exc), param="completion_window") from None
    _check_metadata(body.metadata)
    source = await files.get(body.input_file_id, who)
    if source["purpose"] != "batch":
        raise ApiError(
            422,
            f"input_file_id: {body.input_file_id} has purpose {source['purpose']!r}, not 'batch'",
            param="input_file_id",
        )
    content = await files.content(body.input_file_id, who)
    now = time.time()
    specs, custom_ids, errors = await run_in_threadpool(
        _prepare, gw, who, content, endpoint=body.endpoint, deadline=now + window
    )
    fields = {
        "id": f"batch_{uuid.uuid4().hex}",
        "tenant": who.tenant,
        "endpoint": body.endpoint,
        "input_file_id": body.input_file_id,
        "completion_window": body.completion_window,
        "created_at": repr(now),
        "expires_at": repr(now + window),
        "metadata": "" if body.metadata is None else json.dumps(body.metadata),
        "total": str(len(specs) + len(errors)),
        "completed": "0",
        "failed": "0",
    }
    if errors:
        shown = [e.as_dict() for e in errors[:_MAX_ERRORS_SHOWN]]
        fields.update(
            status="failed",
            failed_at=repr(now),
            errors=json.dumps({"object": "list", "data": shown}),
        )
        await batches.create(fields, [])
        return as_object(fields)
    ids = await submit(gw, who, specs, api="batch")
    fields.update(status="in_progress", in_progress_at=repr(now))
    await batches.create(fields, list(zip(custom_ids, ids, strict=True)))
    gw.audit.write(
        "batch.create",
        tenant=who.tenant,
        key=who.key_id,
        client=who.address,
        batch=fields["id"],
        jobs=len(ids),
        input_file_id=body.input_file_id,
    )
    return as_object(fields)


@router.get("/v1/batches/{batch_id}", responses={404: {"description": "No such batch"}})
async def get_batch(batch_id: str, both: Stores, who: Who) -> dict[str, Any]:
    gw, batches, files = both
    return as_object(await _refresh(gw, batches, files, await batches.get(batch_id, who)))


@router.get("/v1/batches")
async def list_batches(
    both: Stores,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    """The caller's batches, newest first."""
    gw, batches, files = both
    ids = await batches.ids(who.tenant)
    if after in ids:
        ids = ids[ids.index(after) + 1 :]
    data = []
    for batch_id in ids[:limit]:
        try:
            raw = await batches.get(batch_id, who)
        except ApiError:  # expired from Redis since it was listed
            continue
        data.append(as_object(await _refresh(gw, batches, files, raw)))
    return {
        "object": "list",
        "data": data,
        "has_more": len(ids) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.post(
    "/v1/batches/{batch_id}/cancel",
    responses={
        404: {"description": "No such batch"},
        409: {"description": "The batch has already ended"},
    },
)
async def cancel_batch(batch_id: str, both: Stores, who: Who) -> dict[str, Any]:
    """Cancel a batch: requests that have not run never will; the others' results stay."""
    gw, batches, files = both
    raw = await batches.get(batch_id, who)
    if raw["status"] in ("completed", "failed", "expired"):
        raise ApiError(
            409, f"batch {batch_id} has already ended ({raw['status']})", code="batch_ended"
        )
    if raw["status"] == "in_progress":
        now = repr(time.time())
        await batches.update(batch_id, status="cancelling", cancelling_at=now)
        raw.update(status="cancelling", cancelling_at=now)
        await _cancel_unfinished(gw, batches, batch_id)
        gw.audit.write(
            "batch.cancel", tenant=who.tenant, key=who.key_id, client=who.address, batch=batch_id
        )
    return as_object(await _refresh(gw, batches, files, raw))


# -- preparing ----------------------------------------------------------------------------


def _prepare(
    gw: Gateway,
    who: Caller,
    content: str,
    *,
    endpoint: str,
    deadline: float,
) -> tuple[list[JobSpec], list[str], list[LineError]]:
    """Every line as a job spec, or every bad line. CPU work: runs in a thread."""
    lines, errors = parse_input(
        content, endpoint=endpoint, max_requests=gw.settings.max_batch_requests
    )
    specs, custom_ids = [], []
    for line in lines:
        try:
            jobs = _line_jobs(endpoint, line)
            for job in jobs:  # a batch runs at its level, within its window
                job.update(priority=gw.settings.batch_priority, deadline=deadline)
            specs += validate(gw, who, jobs, priority=None, label="body")
            custom_ids.append(line.custom_id)
        except ApiError as exc:
            errors.append(
                LineError(line.line, exc.code or "invalid_request", exc.message, exc.param)
            )
    errors.sort(key=lambda e: e.line or 0)
    return specs, custom_ids, errors


def _line_jobs(endpoint: str, line: InputLine) -> list[dict[str, Any]]:
    try:
        if endpoint == "/v1/completions":
            completion = CompletionRequest.model_validate(line.body)
            if completion.echo:
                raise ApiError(422, "echo: not supported in batches", param="echo")
            request: CompletionRequest | ChatRequest = completion
            jobs = completion_jobs(completion)
        else:
            request = ChatRequest.model_validate(line.body)
            jobs = chat_jobs(request)
    except PydanticError as exc:
        raise request_error(exc.errors()) from None
    if request.stream:  # as in OpenAI's Batch API: the output file is the answer
        raise ApiError(422, "stream: not supported in batches", param="stream")
    if len(jobs) != 1:
        raise ApiError(422, "body: a batch line is one request: one prompt, n = 1", param="n")
    return jobs


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > 16:
        raise ApiError(
            422, f"metadata: {len(metadata)} pairs is over the limit of 16", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise ApiError(
                422, "metadata: keys are at most 64 characters, values 512", param="metadata"
            )


# -- moving a batch on --------------------------------------------------------------------


async def _states(redis: aioredis.Redis, job_ids: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for start in range(0, len(job_ids), _CHUNK):
        pipe = redis.pipeline(transaction=False)
        for job_id in job_ids[start : start + _CHUNK]:
            pipe.hget(names.job_key(job_id), "state")
        out += await pipe.execute()
    return out


async def _cancel_unfinished(gw: Gateway, batches: BatchStore, batch_id: str) -> None:
    requests = await batches.requests(batch_id)
    job_ids = [job_id for _, job_id in requests]
    states = await _states(gw.redis, job_ids)
    live = [j for j, s in zip(job_ids, states, strict=True) if s is not None and s not in _ENDED]

    def cancel() -> None:
        for job_id in live:
            gw.client.cancel(job_id)

    await gw.call(cancel)


async def _refresh(
    gw: Gateway,
    batches: BatchStore,
    files: FileStore,
    raw: dict[str, str],
) -> dict[str, str]:
    """Count a running batch's jobs; finish it once they have all ended."""
    if raw["status"] not in ("in_progress", "cancelling", "finalizing"):
        return raw
    batch_id = raw["id"]
    requests = await batches.requests(batch_id)
    states = await _states(gw.redis, [job_id for _, job_id in requests])
    if (
        raw["status"] == "in_progress"
        and not raw.get("expiring")
        and time.time() >= float(raw["expires_at"])
        and not all(s is None or s in _ENDED for s in states)
    ):
        # The window closed: what has not run, won't (OpenAI's `expired`).
        await batches.update(batch_id, expiring="1")
        raw["expiring"] = "1"
        await _cancel_unfinished(gw, batches, batch_id)
        states = await _states(gw.redis, [job_id for _, job_id in requests])
    counts = {
        "completed": sum(s == JobState.SUCCEEDED.value for s in states),
        "failed": sum(s is None or (s in _ENDED and s != JobState.SUCCEEDED.value) for s in states),
    }
    raw.update({k: str(v) for k, v in counts.items()})
    if counts["completed"] + counts["failed"] < len(states):
        await batches.update(batch_id, **counts)
        return raw
    return await _finalize(gw, batches, files, raw, requests)


async def _finalize(
    gw: Gateway,
    batches: BatchStore,
    files: FileStore,
    raw: dict[str, str],
    requests: list[tuple[str, str]],
) -> dict[str, str]:
    batch_id = raw["id"]
    lock = names.batch_lock_key(batch_id)
    if not await gw.redis.set(lock, "1", nx=True, ex=_FINALIZE_LOCK_SECONDS):
        return {**raw, "status": "finalizing"}  # another gateway is writing its files
    try:
        current = text_hash(await gw.redis.hgetall(names.batch_key(batch_id)))
        if current.get("status") not in ("in_progress", "cancelling", "finalizing"):
            return dict(current)  # finished by another gateway meanwhile
        now = time.time()
        await batches.update(batch_id, status="finalizing", finalizing_at=repr(now))
        expired = bool(raw.get("expiring"))
        output: list[str] = []
        errors: list[str] = []
        for start in range(0, len(requests), _CHUNK):
            chunk = requests[start : start + _CHUNK]
            pipe = gw.redis.pipeline(transaction=False)
            for _, job_id in chunk:
                pipe.hgetall(names.job_key(job_id))
            for (custom_id, _), record in zip(chunk, await pipe.execute(), strict=True):
                line, failed = output_line(
                    custom_id,
                    decode_record(record) if record else None,
                    endpoint=raw["endpoint"],
                    expired=expired,
                )
                (errors if failed else output).append(json.dumps(line))
        final = {
            "status": "cancelled"
            if raw["status"] == "cancelling"
            else "expired"
            if expired
            else "completed"
        }
        final[f"{final['status']}_at"] = repr(time.time())
        final["finalizing_at"] = repr(now)
        for name, lines in (("output_file_id", output), ("error_file_id", errors)):
            if lines:
                made = await files.create(
                    raw["tenant"],
                    filename=f"{batch_id}_{name[:-8]}.jsonl",
                    purpose="batch_output",
                    content="\n".join(lines) + "\n",
                )
                final[name] = made["id"]
        await batches.update(batch_id, **final)
        return {**raw, **final}
    finally:
        await gw.redis.delete(lock)
