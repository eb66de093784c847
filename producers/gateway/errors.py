"""HTTP errors, all in OpenAI's shape so every OpenAI client reads them:

    {"error": {"message": "...", "type": "...", "param": "...", "code": "..."}}

The message names the field and the limit; `param` names the field alone. Bad input is a
4xx with such a body, never a traceback: the handlers below turn pydantic's, genq's and
Starlette's errors into it, and anything unexpected into a bare 500 (logged here, not sent).

    ApiError (a Starlette HTTPException, so it passes through FastAPI's body parsing)
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from genq.errors import BrokerError, GenqError, NotFoundError, StoreError, ValidationError
from genq.schema import JobRecord, JobState

__all__ = [
    "ApiError",
    "error_body",
    "field_path",
    "install_handlers",
    "job_failure",
    "unavailable",
]

log = logging.getLogger(__name__)

# Seconds a client is asked to wait after the broker or Redis failed us: long enough for a
# reconnect, short enough that a blip costs little.
_UNAVAILABLE_RETRY_AFTER = 2

# The worker records a job the engine refused (a prompt longer than the context, a chat
# template that rejects the roles) with this phrase; such a job failed because of its input.
_REJECTED = "rejected by the engine"

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(HTTPException):
    """An error answered to the client, in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,  # noqa: A002 - the OpenAI error's field
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )

    def response(self) -> JSONResponse:
        return JSONResponse(
            error_body(self.message, type=self.type, param=self.param, code=self.code),
            status_code=self.status_code,
            headers=self.headers,
        )


def error_body(
    message: str,
    *,
    type: str,  # noqa: A002 - the OpenAI error's field
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def unavailable(what: str, exc: Exception) -> ApiError:
    """The broker or Redis failed: 503, retry soon. Nothing was accepted."""
    return ApiError(
        503,
        f"{what} is unavailable, nothing was accepted: {exc}",
        code="service_unavailable",
        type="server_error",
        headers={"Retry-After": str(_UNAVAILABLE_RETRY_AFTER)},
    )


def field_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """`("body", "messages", 0, "content")` -> `messages[0].content`. Drops the `body`
    prefix and stops at the tag pydantic puts in a location inside a union (`str`,
    `list[...]`, a model's class name): what follows is one member's detail."""
    return _clean(loc)[0]


def _clean(loc: tuple[Any, ...] | list[Any]) -> tuple[str | None, bool]:
    """The field path, and whether a union tag cut it short."""
    if len(loc) >= 2 and loc[0] in ("header", "query", "path"):
        return f"{loc[1]}", False  # a parameter: its name as the client sent it
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("body", "query", "header", "path") and not out:
            continue
        elif _is_tag(str(part)):
            return out or None, True
        else:
            out += f".{part}" if out else str(part)
    return out or None, False


def _is_tag(part: str) -> bool:
    # Field names here are lower_snake_case; tags are types: str, int, list[...], JobSpec.
    return (
        "[" in part
        or part.startswith("function-")
        or part[:1].isupper()
        or part in ("str", "int", "float", "bool", "bytes", "dict", "list", "none")
    )


def job_failure(record: JobRecord) -> ApiError:
    """Why a job that did not succeed gives no completion: input the engine refused is 422
    (like a bad field), a cancel 409, a missed deadline 408, an engine failure 500."""
    error = record.error or record.state.value
    if record.state is JobState.CANCELLED:
        return ApiError(409, f"job {record.id} was cancelled: {error}", code="cancelled")
    if record.state is JobState.EXPIRED:
        return ApiError(
            408,
            f"job {record.id} expired: {error}",
            code="deadline_exceeded",
            type="invalid_request_error",
        )
    if _REJECTED in error:
        return ApiError(422, f"job {record.id}: {error}", code="rejected")
    return ApiError(500, f"job {record.id} failed: {error}", code="job_failed", type="server_error")


def genq_error(exc: GenqError) -> ApiError:
    if isinstance(exc, ValidationError):
        return ApiError(422, str(exc), param=exc.field)
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc), code="not_found")
    if isinstance(exc, BrokerError):
        return unavailable("the broker", exc)
    if isinstance(exc, StoreError):
        return unavailable("redis", exc)
    return ApiError(500, f"{type(exc).__name__}: {exc}", type="server_error")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, ApiError):
            return exc.response()
        # Starlette's own: no such route (404), wrong method (405), ...
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers) if exc.headers else None
        return ApiError(exc.status_code, detail, headers=headers).response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return request_error(exc.errors()).response()

    @app.exception_handler(GenqError)
    async def genq(_request: Request, exc: GenqError) -> JSONResponse:
        return genq_error(exc).response()

    @app.exception_handler(RedisError)
    async def redis_down(_request: Request, exc: RedisError) -> JSONResponse:
        return unavailable("redis", exc).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return ApiError(
            500, "internal error (logged by the gateway)", type="server_error"
        ).response()


def request_error(errors: Any) -> ApiError:
    """pydantic's errors -> one 422 naming the first bad field and what is wrong with it.
    A value that fits no member of a union gets every member's complaint, joined by "or"."""
    errors = list(errors)
    if not errors:
        return ApiError(422, "invalid request")
    err = errors[0]
    if err.get("type") == "json_invalid":
        reason = (err.get("ctx") or {}).get("error", "")
        return ApiError(
            422,
            f"body: not valid JSON ({reason})".replace(" ()", ""),
            param="body",
            code="invalid_json",
        )
    field, in_union = _clean(err.get("loc", ()))
    msgs = [_msg(err)]
    if in_union:
        msgs += [_msg(e) for e in errors[1:] if _clean(e.get("loc", ()))[0] == field]
    msg = ", or ".join(dict.fromkeys(msgs))
    return ApiError(422, f"{field or 'body'}: {msg}", param=field or "body")


def _msg(err: Any) -> str:
    if err.get("type") == "missing":
        return "required"
    return str(err.get("msg", "invalid")).removeprefix("Value error, ")
