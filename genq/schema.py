"""The job: what a client asks for (`JobSpec`) and what it gets back (`JobRecord`).

Prompts are data: they are carried verbatim, never templated or formatted by genq (chat
messages get the model's own chat template in the worker, as vLLM's server does)."""

from __future__ import annotations

import enum
import time
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genq.errors import ValidationError
from genq.settings import FleetSettings

__all__ = [
    "TERMINAL_STATES",
    "ChatMessage",
    "JobRecord",
    "JobSpec",
    "JobState",
    "Usage",
    "parse_spec",
]

# A deadline below this is read as seconds from now, above it as a Unix time (2001-09-09).
_ABSOLUTE_AFTER = 1e9


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class JobSpec(BaseModel):
    """One generation request. Field limits that depend on the fleet (levels, declared
    models, the max_tokens limit) are checked by `check` against the settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    model: str = Field(min_length=1, max_length=200)
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    priority: int = 0
    max_tokens: int | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = Field((), max_length=16)
    seed: int | None = Field(None, ge=0, lt=2**63)
    ignore_eos: bool = False
    deadline: float | None = Field(None, gt=0)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    tenant: str | None = Field(None, min_length=1, max_length=100)
    cache: bool = True
    stream: bool = False
    """Publish the text as it is generated (a Redis Stream per job, `names.progress_key`),
    for a client that streams it; the final record is still the result. It changes no
    text, so it is not part of the cache key."""

    @field_validator("priority", "max_tokens", "seed", mode="before")
    @classmethod
    def _no_bool_or_float(cls, value: Any) -> Any:
        # pydantic's lax mode would read True as 1 and 2.0 as 2; a level or a token count
        # given as either is almost certainly a mistake.
        if isinstance(value, (bool, float)):
            raise ValueError("must be an integer")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> JobSpec:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        if self.prompt is not None and not self.prompt:
            raise ValueError("prompt: must not be empty")
        if self.messages is not None and not self.messages:
            raise ValueError("messages: must not be empty")
        return self

    def check(self, settings: FleetSettings) -> None:
        """Raise `ValidationError` naming the field and the limit if the fleet can't take it."""
        if self.model not in settings.models:
            declared = ", ".join(settings.models) or "none (set GENQ_MODELS)"
            raise ValidationError(
                f"model: {self.model!r} is not served by this fleet; declared models: {declared}",
                field="model",
            )
        if not 0 <= self.priority < settings.levels:
            raise ValidationError(
                f"priority: {self.priority} is outside the levels 0..{settings.levels - 1}",
                field="priority",
            )
        if self.max_tokens is not None and not 1 <= self.max_tokens <= settings.max_tokens_limit:
            raise ValidationError(
                f"max_tokens: {self.max_tokens} is outside 1..{settings.max_tokens_limit}",
                field="max_tokens",
            )
        size = self.prompt_chars()
        if size > settings.max_prompt_chars:
            field = "prompt" if self.prompt is not None else "messages"
            raise ValidationError(
                f"{field}: {size} characters is over the limit of {settings.max_prompt_chars}",
                field=field,
            )

    def prompt_chars(self) -> int:
        """The prompt's length, or the chat messages' contents' summed, in characters."""
        if self.prompt is not None:
            return len(self.prompt)
        return sum(len(m.content) for m in self.messages or ())

    def deadline_at(self, now: float) -> float | None:
        """The deadline as a Unix time: small numbers are seconds from `now`."""
        if self.deadline is None:
            return None
        return self.deadline if self.deadline >= _ABSOLUTE_AFTER else now + self.deadline

    @property
    def deterministic(self) -> bool:
        """Same request, same text: greedy, or sampled with a fixed seed."""
        return self.temperature == 0.0 or self.seed is not None


def parse_spec(data: Any, **overrides: Any) -> JobSpec:
    """Build a `JobSpec`, turning pydantic's error into genq's, naming the first bad field."""
    if isinstance(data, JobSpec):
        return data.model_copy(update=overrides) if overrides else data
    if not isinstance(data, dict):
        raise ValidationError(f"request: expected an object, got {type(data).__name__}")
    try:
        return JobSpec.model_validate({**data, **overrides})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        raise ValidationError(f"{field}: {msg}" if field else msg, field=field) from None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class JobRecord(BaseModel):
    """A job as stored in Redis and returned by `status` / `result` / `GET /v1/jobs/{id}`."""

    id: str
    state: JobState
    model: str
    priority: int
    tenant: str
    enqueued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    deadline_at: float | None = None
    worker: str | None = None
    attempts: int = 0
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    cached: bool = False

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def wait_seconds(self, now: float | None = None) -> float:
        """Time spent queued: until start, or until now if not started."""
        end = self.started_at or self.finished_at or (now if now is not None else time.time())
        return max(0.0, end - self.enqueued_at)
