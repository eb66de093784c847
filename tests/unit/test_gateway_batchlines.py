"""The Batch API's input and output lines, without any service."""

from __future__ import annotations

import json
from typing import Any

import pytest

from genq.schema import JobRecord, JobState, Usage
from producers.gateway.batchlines import output_line, parse_input, window_seconds

URL = "/v1/chat/completions"


def line(custom_id: str, **fields: Any) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": URL,
            "body": {"model": "tiny", "messages": []},
            **fields,
        }
    )


def test_parse_input_reads_every_request_and_names_every_bad_line() -> None:
    content = "\n".join(
        [
            line("a"),
            "",  # blank lines are skipped, but still counted
            line("b"),
            line("a"),
            line("c", url="/v1/completions"),
            line("d", method="GET"),
            '{"custom_id": "e", "url": "/v1/chat/completions", "body": "text"}',
            "[1, 2]",
            "{oops",
            json.dumps({"url": URL, "body": {}}),
        ]
    )
    lines, errors = parse_input(content, endpoint=URL, max_requests=100)
    assert [(x.line, x.custom_id) for x in lines] == [(1, "a"), (3, "b")]
    assert [(e.line, e.code, e.param) for e in errors] == [
        (4, "duplicate_custom_id", "custom_id"),
        (5, "mismatched_url", "url"),
        (6, "invalid_request", "method"),
        (7, "invalid_request", "body"),
        (8, "invalid_request", "line"),
        (9, "invalid_json_line", None),
        (10, "invalid_request", "custom_id"),
    ]


def test_parse_input_limits() -> None:
    content = "\n".join(line(str(i)) for i in range(5))
    _, errors = parse_input(content, endpoint=URL, max_requests=3)
    assert errors[-1].code == "too_many_requests" and errors[-1].line == 4
    _, errors = parse_input("\n\n", endpoint=URL, max_requests=3)
    assert errors[0].code == "empty_file"


@pytest.mark.parametrize(("window", "seconds"), [("24h", 86_400), ("1h", 3600), ("168h", 604_800)])
def test_window_seconds(window: str, seconds: int) -> None:
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["24", "0h", "169h", "1d", "", "24 h", "-1h"])
def test_window_seconds_refuses_what_is_not_hours(window: str) -> None:
    with pytest.raises(ValueError, match="completion_window"):
        window_seconds(window)


def record(state: JobState, **fields: Any) -> JobRecord:
    return JobRecord(
        id="j1",
        state=state,
        model="tiny",
        priority=0,
        tenant="t",
        enqueued_at=1.0,
        finished_at=9.0,
        **fields,
    )


def test_a_success_goes_to_the_output_file_in_openais_line_format() -> None:
    done = record(
        JobState.SUCCEEDED,
        text="hi",
        finish_reason="stop",
        usage=Usage(prompt_tokens=3, completion_tokens=1),
    )
    out, failed = output_line("c1", done, endpoint=URL)
    assert not failed
    assert out["id"] == "batch_req_j1" and out["custom_id"] == "c1" and out["error"] is None
    assert out["response"]["status_code"] == 200 and out["response"]["request_id"] == "j1"
    assert out["response"]["body"]["choices"][0]["message"]["content"] == "hi"
    out, _ = output_line("c1", done, endpoint="/v1/completions")
    assert out["response"]["body"]["object"] == "text_completion"
    assert out["response"]["body"]["created"] == 9


def test_failures_and_requests_that_never_ran_go_to_the_error_file() -> None:
    out, failed = output_line(
        "c", record(JobState.FAILED, error="rejected by the engine: x"), endpoint=URL
    )
    assert failed and out["response"]["status_code"] == 422
    assert out["response"]["body"]["error"]["message"].endswith("rejected by the engine: x")
    out, failed = output_line("c", record(JobState.CANCELLED), endpoint=URL)
    assert failed and out["response"] is None and out["error"]["code"] == "batch_cancelled"
    out, _ = output_line("c", record(JobState.CANCELLED), endpoint=URL, expired=True)
    assert out["error"]["code"] == "batch_expired"
    out, _ = output_line("c", record(JobState.EXPIRED), endpoint=URL)
    assert out["error"]["code"] == "batch_expired"
    out, failed = output_line("c", None, endpoint=URL)
    assert failed and out["error"]["code"] == "missing"
