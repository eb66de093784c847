"""OpenAI requests -> genq jobs -> OpenAI responses, without any service."""

from __future__ import annotations

from typing import Any

import pytest

from genq.schema import JobRecord, JobState, Usage
from producers.gateway.errors import ApiError
from producers.gateway.wire import (
    ChatRequest,
    CompletionRequest,
    chat_body,
    chat_jobs,
    completion_body,
    completion_jobs,
    models_body,
)


def record(
    job_id: str,
    text: str = "out",
    *,
    state: JobState = JobState.SUCCEEDED,
    prompt_tokens: int = 5,
    completion_tokens: int = 2,
    error: str | None = None,
    finish_reason: str | None = "length",
) -> JobRecord:
    return JobRecord(
        id=job_id,
        state=state,
        model="tiny",
        priority=0,
        tenant="t",
        enqueued_at=1.0,
        finished_at=2.0,
        text=text,
        finish_reason=finish_reason,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
        error=error,
    )


def test_completion_jobs_are_one_per_prompt_and_choice_in_openais_order() -> None:
    req = CompletionRequest(
        model="tiny",
        prompt=["a", "b"],
        n=2,
        max_tokens=7,
        seed=10,
        idempotency_key="k",
        temperature=0.5,
    )
    jobs = completion_jobs(req)
    assert [j["prompt"] for j in jobs] == ["a", "a", "b", "b"]
    # Choice j samples with seed + j (n copies of one seed would be one text n times).
    assert [j["seed"] for j in jobs] == [10, 11, 10, 11]
    assert [j["idempotency_key"] for j in jobs] == ["k#0", "k#1", "k#2", "k#3"]
    assert all(j["max_tokens"] == 7 and j["temperature"] == 0.5 for j in jobs)
    assert "priority" not in jobs[0]  # the header or the gateway's default decides


def test_a_single_completion_keeps_its_idempotency_key_and_genq_fields() -> None:
    (job,) = completion_jobs(
        CompletionRequest(
            model="tiny",
            prompt="p",
            idempotency_key="k",
            priority=4,
            deadline=30,
            ignore_eos=True,
            cache=False,
        )
    )
    assert job == {
        "model": "tiny",
        "prompt": "p",
        "idempotency_key": "k",
        "priority": 4,
        "deadline": 30,
        "ignore_eos": True,
        "cache": False,
    }


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"logprobs": 3}, 422, "logprobs"),
        ({"presence_penalty": 0.5}, 422, "presence_penalty"),
        ({"logit_bias": {"1": 2.0}}, 422, "logit_bias"),
        ({"suffix": "end"}, 422, "suffix"),
        ({"best_of": 3}, 422, "best_of"),
        ({"prompt": [1, 2, 3]}, 422, "prompt"),
        ({"prompt": []}, 422, "prompt"),
    ],
)
def test_what_genq_cannot_honour_is_refused_by_name(
    fields: dict[str, Any], status: int, param: str
) -> None:
    with pytest.raises(ApiError) as caught:
        completion_jobs(
            CompletionRequest.model_validate({"model": "tiny", "prompt": "p", **fields})
        )
    assert caught.value.status_code == status
    assert caught.value.param == param
    assert caught.value.message.startswith(f"{param}:")


def test_a_streamed_request_asks_its_workers_to_publish_the_text() -> None:
    req = ChatRequest.model_validate(
        {
            "model": "tiny",
            "stream": True,
            "n": 2,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    assert [job["stream"] for job in chat_jobs(req)] == [True, True]
    assert req.include_usage
    plain = CompletionRequest.model_validate(
        {"model": "tiny", "prompt": "p", "stream_options": {"include_usage": True}}
    )
    assert "stream" not in completion_jobs(plain)[0] and not plain.include_usage


def test_chat_jobs_carry_the_messages_for_the_workers_chat_template() -> None:
    req = ChatRequest.model_validate(
        {
            "model": "tiny",
            "max_tokens": 100,
            "max_completion_tokens": 9,
            "n": 2,
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}],
                },
            ],
            "user": "ignored",
            "stream_options": {"ignored": True},
        }
    )
    jobs = chat_jobs(req)
    assert len(jobs) == 2
    assert jobs[0]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    assert jobs[0]["max_tokens"] == 9  # max_completion_tokens wins over the old name


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "messages[0].content[0].type",
        ),
        ([{"role": "assistant", "content": None}], "messages[0].content"),
    ],
)
def test_bad_chat_messages_are_named(messages: list[Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        chat_jobs(ChatRequest.model_validate({"model": "tiny", "messages": messages}))
    assert caught.value.param == param


def test_chat_refuses_tools_and_json_mode() -> None:
    base = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    for extra, param in (
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
    ):
        with pytest.raises(ApiError) as caught:
            chat_jobs(ChatRequest.model_validate({**base, **extra}))
        assert caught.value.param == param
    chat_jobs(ChatRequest.model_validate({**base, "response_format": {"type": "text"}}))


def test_completion_body_is_openais_shape_with_usage() -> None:
    records = [
        record("j1", "x"),
        record("j2", "y"),
        record("j3", "z", prompt_tokens=8),
        record("j4", "w", prompt_tokens=8),
    ]
    body = completion_body(records, model="tiny", n=2, echo_prompts=["A", "B"], created=5)
    assert body["id"] == "cmpl-j1" and body["object"] == "text_completion"
    assert body["created"] == 5 and body["model"] == "tiny"
    assert [c["text"] for c in body["choices"]] == ["Ax", "Ay", "Bz", "Bw"]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["choices"][0]["finish_reason"] == "length"
    # Each prompt is counted once however many choices it has.
    assert body["usage"] == {"prompt_tokens": 13, "completion_tokens": 8, "total_tokens": 21}


def test_chat_body_is_openais_shape() -> None:
    body = chat_body([record("j1", "hi", finish_reason=None)], model="tiny")
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-j1"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "hi"}
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 7


@pytest.mark.parametrize(
    ("state", "error", "status"),
    [
        (JobState.FAILED, "rejected by the engine: prompt longer than 512", 422),
        (JobState.FAILED, "identical job x failed: rejected by the engine: too long", 422),
        (JobState.FAILED, "failed after 3 attempts: EngineError()", 500),
        (JobState.CANCELLED, "cancelled by the client", 409),
        (JobState.EXPIRED, "deadline passed before the job started", 408),
    ],
)
def test_a_job_that_did_not_succeed_becomes_the_right_error(
    state: JobState, error: str, status: int
) -> None:
    with pytest.raises(ApiError) as caught:
        chat_body([record("ok"), record("bad", state=state, error=error)], model="tiny")
    assert caught.value.status_code == status
    assert "bad" in caught.value.message and error in caught.value.message


def test_models_body() -> None:
    assert models_body(["a", "b"]) == {
        "object": "list",
        "data": [
            {"id": "a", "object": "model", "created": 0, "owned_by": "genq"},
            {"id": "b", "object": "model", "created": 0, "owned_by": "genq"},
        ],
    }
