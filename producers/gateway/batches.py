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
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticError
from starlette.concurrency import run_in_threadpool

from genq.schema import JobSpec
from producers.gateway.auth import Caller, caller
from producers.gateway.batch_progress import cancel_unfinished, refresh
from producers.gateway.batch_store import BatchStore, as_object
from producers.gateway.batchlines import (
    ENDPOINTS,
    InputLine,
    LineError,
    parse_input,
    window_seconds,
)
from producers.gateway.context import Gateway, gateway_of
from producers.gateway.errors import ApiError, request_error
from producers.gateway.files import FileStore
from producers.gateway.submission import submit, validate
from producers.gateway.wire import ChatRequest, CompletionRequest, chat_jobs, completion_jobs

__all__ = ["router"]

router = APIRouter(tags=["batch"])

_MAX_ERRORS_SHOWN = 100


class BatchCreate(BaseModel):
    input_file_id: str
    endpoint: str = Field(description="/v1/chat/completions or /v1/completions")
    completion_window: str = Field(
        "24h", description="Hours, e.g. 24h: what has not run by then is cancelled"
    )
    metadata: dict[str, str] | None = Field(None, description="Up to 16 pairs")


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
    return as_object(await refresh(gw, batches, files, await batches.get(batch_id, who)))


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
        data.append(as_object(await refresh(gw, batches, files, raw)))
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
        await cancel_unfinished(gw, batches, batch_id)
        gw.audit.write(
            "batch.cancel", tenant=who.tenant, key=who.key_id, client=who.address, batch=batch_id
        )
    return as_object(await refresh(gw, batches, files, raw))


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
