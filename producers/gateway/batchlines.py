"""The Batch API's line formats, as OpenAI writes them. Pure: no I/O.

Input, one request per line:

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

Output file, one line per request that succeeded; error file, one per request that did not:

    {"id": "batch_req_<job>", "custom_id": "r1",
     "response": {"status_code": 200, "request_id": "<job>", "body": {...completion...}},
     "error": null}
    {"id": "batch_req_<job>", "custom_id": "r2", "response": null,
     "error": {"code": "batch_expired", "message": "..."}}

A request the engine failed has a `response` with the status and error body the same request
would have had on its own; one that never ran (cancelled, expired) has an `error` only."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from genq.schema import JobRecord, JobState
from producers.gateway.errors import error_body, job_failure
from producers.gateway.wire import chat_body, completion_body

__all__ = [
    "ENDPOINTS",
    "InputLine",
    "LineError",
    "output_line",
    "parse_input",
    "window_seconds",
]

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")

_WINDOW = re.compile(r"^([1-9][0-9]{0,3})h$")
_MAX_WINDOW_HOURS = 24 * 7
_MAX_CUSTOM_ID = 512


@dataclass(frozen=True, slots=True)
class InputLine:
    line: int
    """1-based line number in the input file."""
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LineError:
    line: int | None
    code: str
    message: str
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


def window_seconds(window: str) -> int:
    """`24h` -> 86400. OpenAI takes only `24h`; genq takes 1h..168h."""
    match = _WINDOW.match(window)
    if not match or not 1 <= int(match.group(1)) <= _MAX_WINDOW_HOURS:
        raise ValueError(
            f"completion_window: {window!r} is not a number of hours "
            f"from 1h to {_MAX_WINDOW_HOURS}h, like '24h'"
        )
    return int(match.group(1)) * 3600


def parse_input(
    content: str,
    *,
    endpoint: str,
    max_requests: int,
) -> tuple[list[InputLine], list[LineError]]:
    """Every request of an input file, and every line that isn't one (with its number)."""
    lines: list[InputLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(lines) + len(errors) >= max_requests:
            errors.append(
                LineError(
                    number,
                    "too_many_requests",
                    f"more than {max_requests} requests in one batch (GENQ_MAX_BATCH_REQUESTS)",
                )
            )
            break
        try:
            item = json.loads(raw)
        except ValueError as exc:
            errors.append(LineError(number, "invalid_json_line", f"not valid JSON: {exc}"))
            continue
        error = _check_line(item, endpoint=endpoint, seen=seen)
        if error is not None:
            code, message, param = error
            errors.append(LineError(number, code, message, param))
            continue
        seen.add(item["custom_id"])
        lines.append(InputLine(number, item["custom_id"], item["body"]))
    if not lines and not errors:
        errors.append(LineError(None, "empty_file", "the input file has no requests"))
    return lines, errors


def _check_line(item: Any, *, endpoint: str, seen: set[str]) -> tuple[str, str, str] | None:
    if not isinstance(item, dict):
        return "invalid_request", "a line must be a JSON object", "line"
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > _MAX_CUSTOM_ID:
        return (
            "invalid_request",
            f"custom_id: a string of 1 to {_MAX_CUSTOM_ID} characters is required",
            "custom_id",
        )
    if custom_id in seen:
        return "duplicate_custom_id", f"custom_id: {custom_id!r} is used twice", "custom_id"
    if item.get("method", "POST") != "POST":
        return "invalid_request", "method: only POST is supported", "method"
    if item.get("url") != endpoint:
        return (
            "mismatched_url",
            f"url: {item.get('url')!r} is not the batch's endpoint {endpoint!r}",
            "url",
        )
    if not isinstance(item.get("body"), dict):
        return "invalid_request", "body: a JSON object is required", "body"
    return None


def output_line(
    custom_id: str, record: JobRecord | None, *, endpoint: str, expired: bool = False
) -> tuple[dict[str, Any], bool]:
    """The output line of one request, and whether it belongs in the error file. `expired`:
    the batch's window closed (its unfinished jobs were cancelled for it)."""
    if record is None:
        return _error_line(
            custom_id, None, "missing", "the job's record is gone from Redis (GENQ_JOB_TTL passed)"
        ), True
    if record.state is JobState.SUCCEEDED:
        created = int(record.finished_at or record.enqueued_at)
        if endpoint == "/v1/completions":
            body = completion_body([record], model=record.model, created=created)
        else:
            body = chat_body([record], model=record.model, created=created)
        return _line(
            custom_id, record.id, {"status_code": 200, "request_id": record.id, "body": body}, None
        ), False
    if record.state is JobState.FAILED:
        failure = job_failure(record)
        body = error_body(failure.message, type=failure.type, code=failure.code)
        return _line(
            custom_id,
            record.id,
            {"status_code": failure.status_code, "request_id": record.id, "body": body},
            None,
        ), True
    if record.state is JobState.EXPIRED or (expired and record.state is JobState.CANCELLED):
        return _error_line(
            custom_id,
            record.id,
            "batch_expired",
            "the batch's completion window closed before this request ran",
        ), True
    return _error_line(
        custom_id,
        record.id,
        "batch_cancelled",
        "the batch was cancelled before this request ran"
        if record.state is JobState.CANCELLED
        else f"the request ended {record.state.value}",
    ), True


def _line(
    custom_id: str,
    job_id: str | None,
    response: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": f"batch_req_{job_id}" if job_id else None,
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def _error_line(custom_id: str, job_id: str | None, code: str, message: str) -> dict[str, Any]:
    return _line(custom_id, job_id, None, {"code": code, "message": message})
