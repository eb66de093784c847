"""Settings, read from `GENQ_*` environment variables: one class per deployable.

`FleetSettings` is what every component must agree on (where the broker and Redis are, the
levels and the score); clients and workers extend it with their own knobs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ClientSettings", "FleetSettings", "WorkerSettings"]


class FleetSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENQ_", extra="ignore")

    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    """RabbitMQ URL (`amqp://` or `amqps://`)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis URL (`redis://` or `rediss://`): job records, results, leases."""
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Models the fleet serves (comma-separated). A declared model with no worker up is
    accepted and waits: workers may be scaled to zero."""
    levels: int = Field(10, ge=1, le=64)
    """Priority levels 0..levels-1, higher is more urgent; one RabbitMQ queue each."""
    alpha: float = Field(1.0, gt=0)
    """Score weight of one priority level."""
    beta: float = Field(1 / 30, gt=0)
    """Score weight of one second of waiting: a job climbs alpha/beta... one level per 30 s."""
    max_tokens_limit: int = Field(4096, ge=1)
    """Largest max_tokens a request may ask for."""
    max_prompt_chars: int = Field(1_000_000, ge=1)
    """Largest prompt (or sum of chat message contents) in characters, to protect the broker.
    The token limit is the model's context, checked by the worker."""
    job_ttl: int = Field(86_400, ge=60)
    """Seconds a job record and its result stay in Redis after the job ends."""

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    def starvation_bound(self, levels_apart: int = 1) -> float:
        """Seconds after which a waiting job outranks fresh work `levels_apart` levels above."""
        return self.alpha / self.beta * levels_apart


class ClientSettings(FleetSettings):
    default_max_tokens: int = Field(256, ge=1)
    """max_tokens when a request gives none."""
    publish_timeout: float = Field(10.0, gt=0)
    """Seconds to wait for the broker to confirm a publish before the submit fails."""
    idempotency_ttl: int = Field(86_400, ge=1)
    """Seconds an idempotency key keeps returning the same task ID."""
    default_tenant: str = "default"
    """Tenant of jobs submitted without one."""
    # The cache settings travel in each cacheable job's record, so the worker that runs it
    # applies the submitter's TTL and bound; workers need no cache settings of their own.
    result_cache: bool = True
    """Result cache and single flight for deterministic requests (a request opts out with
    `cache: false`); False turns both off for this producer."""
    cache_ttl: int = Field(3600, ge=0, le=30 * 86_400)
    """Seconds a stored result is served; 0 stores none (single flight still applies)."""
    cache_max_bytes: int = Field(1_000_000, ge=0, le=64_000_000)
    """Results larger than this (their JSON, in bytes) are not stored."""


class WorkerSettings(FleetSettings):
    window: int = Field(2, ge=1, le=1000)
    """Not-yet-started jobs a worker holds per level (RabbitMQ prefetch per level queue).
    Small on purpose: what a worker holds, other workers can't see, and the order is exact
    only among what is visible. Jobs are acked at admission, so running jobs don't count."""
    lease_seconds: float = Field(30.0, ge=1)
    """A running job's lease in Redis; renewed every lease_seconds/3. A job whose worker
    stopped renewing is republished with its original enqueue time."""
    max_attempts: int = Field(3, ge=1, le=100)
    """Attempts before a job that keeps failing in the engine is failed and dead-lettered."""
    grace_period: float = Field(30.0, ge=0)
    """Seconds a stopping worker lets running jobs finish before handing them back."""
    policy: str = Field("score", pattern="^(score|fcfs|fair)$")
    """Admission policy: `score` (α·priority + β·wait), `fcfs`, or `fair` (per-tenant
    virtual token counters within a band of `fair_levels` levels of the best score)."""
    fair_levels: float = Field(2.0, ge=0, le=64)
    """Under `fair`: how many levels below the best held score a less-served tenant may be
    picked; it widens the starvation bound by fair_levels·α/β seconds."""
    admit_headroom: int = Field(0, ge=0)
    """Jobs admitted beyond max_num_seqs so a freed batch slot is refilled without waiting on
    the broker. They wait inside vLLM, outside genq's ordering; keep it small."""
