"""OpenAI's request and response shapes, and how they map to genq jobs. Pure: no I/O.

A completion asks for `n` choices for each of one or more prompts; each choice is one genq
job (`prompt i, choice j` is job `i*n + j`, which is also OpenAI's choice index). A chat
completion's messages become the job's `messages`: the worker renders them with the model's
own chat template. Parameters genq can't honour (logprobs, penalties, tools, ...) are
refused with 422 naming them, rather than silently ignored: a client relying on them must
know. Fields no generation depends on (`user`, ...) are ignored. `stream: true` is answered
as server-sent events (streaming.py)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from genq.schema import JobRecord, JobState
from producers.gateway.errors import ApiError, job_failure

__all__ = [
    "ChatRequest",
    "CompletionRequest",
    "chat_body",
    "chat_jobs",
    "completion_body",
    "completion_jobs",
    "model_body",
    "models_body",
    "usage_of",
]

# OpenAI's newer "developer" role is what older models call "system".
_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool | None = False


class _GenqFields(BaseModel):
    """What genq adds to OpenAI's requests (send them with the SDK's `extra_body`)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, description="A model this fleet serves (GET /v1/models)")
    max_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: StrictInt = Field(1, ge=1, le=128, description="Choices per prompt")
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    stream: StrictBool | None = Field(
        False,
        description=("Server-sent events: the text as the worker generates it, in OpenAI's chunks"),
    )
    stream_options: StreamOptions | None = Field(
        None, description=("With stream: include_usage adds a last chunk with the token usage")
    )
    presence_penalty: float | None = Field(None, description="Not supported: omit, or 0")
    frequency_penalty: float | None = Field(None, description="Not supported: omit, or 0")
    logit_bias: dict[str, float] | None = Field(None, description="Not supported: omit")
    user: str | None = None
    priority: StrictInt | None = Field(
        None,
        description=("genq: priority level, higher is more urgent (or the X-Genq-Priority header)"),
    )
    deadline: float | None = Field(
        None,
        description=("genq: seconds from now, or a Unix time, by which the job must have started"),
    )
    idempotency_key: str | None = Field(
        None,
        description=("genq: the same key (per tenant) returns the same job instead of a new one"),
    )
    ignore_eos: StrictBool = False
    cache: StrictBool = Field(
        True, description="genq: use the result cache (deterministic requests only)"
    )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def refuse_unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                _unsupported(name)
        if self.logit_bias:
            _unsupported("logit_bias")

    def job_fields(self, index: int, total: int, choice: int) -> dict[str, Any]:
        """The JobSpec fields of one choice. With a seed, choice j samples with seed + j:
        n copies of one seed would be n copies of one text."""
        fields: dict[str, Any] = {
            "model": self.model,
            "ignore_eos": self.ignore_eos,
            "cache": self.cache,
        }
        for name in ("max_tokens", "temperature", "top_p", "stop", "deadline", "priority"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        if self.seed is not None:
            fields["seed"] = self.seed + choice
        if self.stream:  # its worker publishes the text as it goes
            fields["stream"] = True
        if self.idempotency_key is not None:
            fields["idempotency_key"] = (
                self.idempotency_key if total == 1 else f"{self.idempotency_key}#{index}"
            )
        return fields


class CompletionRequest(_GenqFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: StrictBool | None = False
    logprobs: StrictInt | None = None
    best_of: StrictInt | None = None
    suffix: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


Role = Literal["system", "developer", "user", "assistant", "tool"]


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatRequest(_GenqFields):
    messages: list[ChatMessageIn]
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


def _unsupported(name: str) -> None:
    raise ApiError(
        422, f"{name}: not supported by genq (leave it out)", param=name, code="unsupported"
    )


def completion_jobs(req: CompletionRequest) -> list[dict[str, Any]]:
    """One job per (prompt, choice)."""
    req.refuse_unsupported()
    if req.logprobs:
        _unsupported("logprobs")
    if req.suffix:
        _unsupported("suffix")
    if req.best_of is not None and req.best_of != req.n:
        _unsupported("best_of")
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if not prompts:
        raise ApiError(422, "prompt: must not be empty", param="prompt")
    if not all(isinstance(p, str) for p in prompts):
        raise ApiError(
            422,
            "prompt: token-ID prompts are not supported; send text",
            param="prompt",
            code="unsupported",
        )
    total = len(prompts) * req.n
    return [
        {**req.job_fields(i * req.n + j, total, j), "prompt": p}
        for i, p in enumerate(prompts)
        for j in range(req.n)
    ]


def chat_jobs(req: ChatRequest) -> list[dict[str, Any]]:
    """One job per choice, all with the same messages."""
    req.refuse_unsupported()
    if req.logprobs or req.top_logprobs:
        _unsupported("logprobs")
    if req.tools or req.functions:
        _unsupported("tools")
    if req.response_format and req.response_format.get("type", "text") != "text":
        _unsupported("response_format")
    messages = [_message(i, m) for i, m in enumerate(req.messages)]
    if not messages:
        raise ApiError(422, "messages: must not be empty", param="messages")
    max_tokens = (
        req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    )
    jobs = []
    for j in range(req.n):
        fields = req.job_fields(j, req.n, j)
        fields.pop("max_tokens", None)
        if max_tokens is not None:
            fields["max_tokens"] = max_tokens
        jobs.append({**fields, "messages": messages})
    return jobs


def _message(i: int, message: ChatMessageIn) -> dict[str, str]:
    role = _ROLES.get(message.role)
    if role is None:
        raise ApiError(
            422,
            f"messages[{i}].role: {message.role!r} is not one of {', '.join(_ROLES)}",
            param=f"messages[{i}].role",
        )
    content = message.content
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if part.type != "text" or part.text is None:
                raise ApiError(
                    422,
                    f"messages[{i}].content[{k}]: only text parts are supported, got {part.type!r}",
                    param=f"messages[{i}].content[{k}].type",
                    code="unsupported",
                )
            texts.append(part.text)
        content = "".join(texts)
    if content is None:
        raise ApiError(
            422,
            f"messages[{i}].content: required (tool calls are not supported)",
            param=f"messages[{i}].content",
        )
    return {"role": role, "content": content}


# -- responses ------------------------------------------------------------------------------


def _succeeded(records: list[JobRecord]) -> None:
    for record in records:
        if record.state is not JobState.SUCCEEDED:
            raise job_failure(record)


def usage_of(records: list[JobRecord], n: int) -> dict[str, int]:
    # A prompt is read once however many choices it has.
    prompt = sum(r.usage.prompt_tokens for r in records[::n] if r.usage)
    completion = sum(r.usage.completion_tokens for r in records if r.usage)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(
    records: list[JobRecord],
    *,
    model: str,
    n: int = 1,
    echo_prompts: list[str] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A `text_completion`; raises the first failed job's error."""
    _succeeded(records)
    choices = []
    for index, record in enumerate(records):
        text = record.text or ""
        if echo_prompts is not None:
            text = echo_prompts[index // n] + text
        choices.append(
            {
                "text": text,
                "index": index,
                "logprobs": None,
                "finish_reason": record.finish_reason or "stop",
            }
        )
    return {
        "id": f"cmpl-{records[0].id}",
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_of(records, n),
        "system_fingerprint": None,
    }


def chat_body(
    records: list[JobRecord],
    *,
    model: str,
    created: int | None = None,
) -> dict[str, Any]:
    """A `chat.completion`; raises the first failed job's error."""
    _succeeded(records)
    choices = [
        {
            "index": index,
            "logprobs": None,
            "finish_reason": record.finish_reason or "stop",
            "message": {"role": "assistant", "content": record.text or ""},
        }
        for index, record in enumerate(records)
    ]
    return {
        "id": f"chatcmpl-{records[0].id}",
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_of(records, len(records)),
        "system_fingerprint": None,
    }


def model_body(model: str, created: int = 0) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "genq"}


def models_body(models: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [model_body(m) for m in models]}


Endpoint = Literal["/v1/completions", "/v1/chat/completions"]
