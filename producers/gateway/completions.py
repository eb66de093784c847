"""OpenAI-compatible completions, chat completions and models.

    POST /v1/completions        submit, wait for the job(s), answer a text_completion
    POST /v1/chat/completions   the same with messages, answer a chat.completion
                                (either with stream: true: server-sent events, streaming.py)
    GET  /v1/models             the models this fleet serves (GENQ_MODELS)

The work still flows through the broker, the scheduler and the workers: a completion is a
job like any other (priority, deadline, tenant, result cache), waited on here. The job IDs
are in the `X-Genq-Job-Ids` header, so a client that timed out can still fetch them. A
client that hangs up gets its jobs cancelled: nobody is left to read them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError

from producers.gateway.auth import Caller, caller
from producers.gateway.context import Gateway, gateway_of
from producers.gateway.errors import ApiError
from producers.gateway.jobs import Priority
from producers.gateway.streaming import stream_response
from producers.gateway.submission import submit, validate
from producers.gateway.wire import (
    ChatRequest,
    CompletionRequest,
    chat_body,
    chat_jobs,
    completion_body,
    completion_jobs,
    model_body,
    models_body,
)

__all__ = ["router"]

router = APIRouter(tags=["openai"])

JOB_IDS_HEADER = "X-Genq-Job-Ids"

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Model not served"},
    422: {
        "description": "Invalid field, a prompt over the token limit, or the engine "
        "refused the prompt"
    },
    429: {"description": "Too many jobs queued"},
}


@router.post("/v1/completions", responses=_ERRORS)
async def create_completion(
    request: Request,
    body: CompletionRequest,
    who: Annotated[Caller, Depends(caller)],
    priority: Priority = None,
) -> Response:
    """A text completion (OpenAI's shape), answered when its jobs end; with `stream`,
    server-sent events while they run."""
    gw = gateway_of(request)
    jobs = completion_jobs(body)
    specs = validate(gw, who, jobs, priority=priority, label="choices")
    await gw.tokens.check(specs[:: body.n], label="prompt")
    echo = [j["prompt"] for j in jobs[:: body.n]] if body.echo else None
    if body.stream:
        return await _stream(
            gw,
            who,
            specs,
            api="completions",
            kind="completion",
            model=body.model,
            n=body.n,
            include_usage=body.include_usage,
            echo_prompts=echo,
        )
    ids, records = await _run(gw, request, who, specs, api="completions")
    return _answer(ids, completion_body(records, model=body.model, n=body.n, echo_prompts=echo))


@router.post("/v1/chat/completions", responses=_ERRORS)
async def create_chat_completion(
    request: Request,
    body: ChatRequest,
    who: Annotated[Caller, Depends(caller)],
    priority: Priority = None,
) -> Response:
    """A chat completion (OpenAI's shape); the worker applies the model's chat template.
    With `stream`, server-sent events while it runs."""
    gw = gateway_of(request)
    specs = validate(gw, who, chat_jobs(body), priority=priority, label="choices")
    await gw.tokens.check(specs[:1], label="messages")
    if body.stream:
        return await _stream(
            gw,
            who,
            specs,
            api="chat",
            kind="chat",
            model=body.model,
            n=body.n,
            include_usage=body.include_usage,
            echo_prompts=None,
        )
    ids, records = await _run(gw, request, who, specs, api="chat")
    return _answer(ids, chat_body(records, model=body.model))


@router.get("/v1/models")
async def list_models(
    request: Request,
    _who: Annotated[Caller, Depends(caller)],
) -> dict[str, Any]:
    """The models this fleet serves (GENQ_MODELS)."""
    return models_body(gateway_of(request).settings.models)


@router.get("/v1/models/{model}", responses={404: {"description": "Model not served"}})
async def get_model(
    request: Request,
    model: str,
    _who: Annotated[Caller, Depends(caller)],
) -> dict[str, Any]:
    if model not in gateway_of(request).settings.models:
        raise ApiError(
            404,
            f"model: {model!r} is not served by this fleet",
            param="model",
            code="model_not_found",
        )
    return model_body(model)


async def _stream(
    gw: Gateway,
    who: Caller,
    specs: list[Any],
    *,
    api: str,
    kind: Literal["completion", "chat"],
    model: str,
    n: int,
    include_usage: bool,
    echo_prompts: list[str] | None,
) -> Response:
    """Submit, then stream: the place in the gateway is taken before the jobs are accepted
    and given back when the stream has ended, however it ends."""
    gw.capacity.take()
    try:
        ids = await submit(gw, who, specs, api=api)
    except BaseException:
        gw.capacity.release()
        raise
    return stream_response(
        gw,
        who,
        ids,
        kind=kind,
        model=model,
        n=n,
        include_usage=include_usage,
        echo_prompts=echo_prompts,
        headers=_ids_header(ids),
        on_close=gw.capacity.release,
    )


async def _run(
    gw: Gateway,
    request: Request,
    who: Caller,
    specs: list[Any],
    *,
    api: str,
) -> tuple[list[str], list[Any]]:
    gw.capacity.take()
    try:
        return await _submit_and_wait(gw, request, who, specs, api=api)
    finally:
        gw.capacity.release()


async def _submit_and_wait(
    gw: Gateway, request: Request, who: Caller, specs: list[Any], *, api: str
) -> tuple[list[str], list[Any]]:
    ids = await submit(gw, who, specs, api=api)
    timeout = gw.settings.completion_timeout
    try:
        records, done = await gw.waiter.wait(ids, timeout=timeout, gone=request.is_disconnected)
    except RedisError as exc:
        # Accepted already: say so, and where to find the jobs, not "nothing accepted".
        raise ApiError(
            503,
            f"redis is unavailable: {exc}; jobs {', '.join(ids)} were "
            "accepted and go on: GET /v1/jobs/{id}",
            code="service_unavailable",
            type="server_error",
            headers={**_ids_header(ids), "Retry-After": "2"},
        ) from None
    if not done:
        if await request.is_disconnected():
            for job_id, record in zip(ids, records, strict=True):
                if not record.done:
                    await gw.call(gw.client.cancel, job_id)
            gw.audit.write(
                "job.cancel",
                tenant=who.tenant,
                key=who.key_id,
                client=who.address,
                jobs=ids,
                reason="client disconnected",
            )
        raise ApiError(
            504,
            f"jobs {', '.join(ids)} did not end within {timeout:g} s "
            "(GENQ_COMPLETION_TIMEOUT); they go on: GET /v1/jobs/{id}",
            code="timeout",
            type="server_error",
            headers={JOB_IDS_HEADER: ",".join(ids)},
        )
    return ids, records


def _answer(ids: list[str], body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=_ids_header(ids))


def _ids_header(ids: list[str]) -> dict[str, str]:
    return {JOB_IDS_HEADER: ",".join(ids)}
