"""The jobs API: submit (one or a list), read, long-poll, cancel.

POST   /v1/jobs            a job object, or a list of them -> {"id"} / {"ids"}
GET    /v1/jobs/{id}       the job record; ?wait=S waits up to S seconds for it to end
DELETE /v1/jobs/{id}       cancel: queued jobs never run, running ones are aborted
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel

from genq.errors import NotFoundError
from genq.schema import JobRecord, JobSpec
from producers.gateway.auth import Caller, caller
from producers.gateway.context import gateway_of
from producers.gateway.errors import ApiError
from producers.gateway.submission import PRIORITY_HEADER, submit, validate

__all__ = ["router"]

router = APIRouter(tags=["jobs"])


class JobAccepted(BaseModel):
    id: str


class JobsAccepted(BaseModel):
    ids: list[str]


class Cancelled(BaseModel):
    id: str
    state: str
    """`cancelled`, `cancelling` (running: its worker aborts it), or the state it had ended in."""


# The body is parsed here, not by FastAPI: a union of an object and a list gives pydantic
# errors for both branches, where one message naming the field is what a client needs. The
# document still shows the schema (see app.py, which adds JobSpec to its components).
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/JobSpec"},
                        {"type": "array", "items": {"$ref": "#/components/schemas/JobSpec"}},
                    ]
                },
            }
        },
    }
}

Priority = Annotated[
    int | None,
    Header(
        alias=PRIORITY_HEADER,
        description=(
            "Priority level (higher is more urgent) of the jobs that give none in the body"
        ),
    ),
]


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobAccepted | JobsAccepted,
    openapi_extra=_BODY_DOC,
    responses={
        404: {"description": "Model not served"},
        422: {"description": "Invalid field"},
        429: {"description": "Too many jobs queued"},
    },
)
async def create_jobs(
    request: Request, who: Annotated[Caller, Depends(caller)], priority: Priority = None
) -> dict[str, Any]:
    """Submit one job (an object) or many (a list); returns their task IDs at once."""
    gw = gateway_of(request)
    payload = parse_json(await request.body())
    many = isinstance(payload, list)
    specs = validate(gw, who, payload if many else [payload], priority=priority)
    await gw.tokens.check(specs)
    ids = await submit(gw, who, specs, api="jobs")
    return {"ids": ids} if many else {"id": ids[0]}


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobRecord,
    responses={404: {"description": "No such job (or not yours)"}},
)
async def get_job(
    request: Request,
    job_id: str,
    who: Annotated[Caller, Depends(caller)],
    wait: Annotated[
        float,
        Query(ge=0, description=("Seconds to wait for the job to end (at most GENQ_MAX_WAIT)")),
    ] = 0,
) -> JobRecord:
    """The job record: state, text, usage, timings."""
    gw = gateway_of(request)
    if wait > gw.settings.max_wait:
        raise ApiError(
            422,
            f"wait: {wait:g} s is over the limit of {gw.settings.max_wait:g} s (GENQ_MAX_WAIT)",
            param="wait",
        )
    record = _visible(who, job_id, (await gw.waiter.read([job_id]))[0])
    if wait and not record.done:
        gw.capacity.take()
        try:
            (record,), _ = await gw.waiter.wait(
                [job_id], timeout=wait, gone=request.is_disconnected
            )
        finally:
            gw.capacity.release()
    return record


@router.delete(
    "/v1/jobs/{job_id}",
    response_model=Cancelled,
    responses={404: {"description": "No such job (or not yours)"}},
)
async def cancel_job(
    request: Request, job_id: str, who: Annotated[Caller, Depends(caller)]
) -> Cancelled:
    """Cancel a job."""
    gw = gateway_of(request)
    _visible(who, job_id, (await gw.waiter.read([job_id]))[0])
    state = await gw.call(gw.client.cancel, job_id)
    gw.audit.write(
        "job.cancel",
        tenant=who.tenant,
        key=who.key_id,
        client=who.address,
        job=job_id,
        outcome=state,
    )
    return Cancelled(id=job_id, state=state)


def parse_json(body: bytes) -> Any:
    """Strict JSON: NaN and Infinity are not JSON, and no job field can hold them."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            422, f"body: not valid JSON ({exc})", param="body", code="invalid_json"
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _visible(who: Caller, job_id: str, record: JobRecord) -> JobRecord:
    """Another tenant's job reads exactly as a job that does not exist."""
    if not who.sees(record.tenant):
        raise NotFoundError(f"job {job_id}: not found")
    return record


# What the request body of POST /v1/jobs is, for the OpenAPI document.
DOCUMENTED_MODELS: list[type[BaseModel]] = [JobSpec]
