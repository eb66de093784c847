"""Settings, read from `GENQ_*` environment variables: one class per deployable.

`FleetSettings` is what every component must agree on (where the broker and Redis are, the
levels and the score); clients and workers extend it with their own knobs."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ClientSettings", "FleetSettings", "GatewaySettings", "WorkerSettings"]


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
    policy: str = Field("score", pattern="^(score|fcfs|fair)$")
    """Admission policy: `score` (α·priority + β·wait), `fcfs`, or `fair` (per-tenant
    virtual token counters within a band of `fair_levels` levels of the best score, and
    tenant turns in the queues: scheduler/turns.py). Producers and workers must agree."""
    max_tokens_limit: int = Field(4096, ge=1)
    """Largest max_tokens a request may ask for."""
    max_prompt_chars: int = Field(1_000_000, ge=1)
    """Largest prompt (or sum of chat message contents) in characters, to protect the broker.
    The token limit is the model's context: checked by the gateway with the model's
    tokenizer (GENQ_MAX_PROMPT_TOKENS), and always by the worker's engine."""
    job_ttl: int = Field(86_400, ge=60)
    """Seconds a job record and its result stay in Redis after the job ends."""
    tls_ca_file: str | None = None
    """CA certificate(s) (PEM) to verify `amqps://` and `rediss://` servers against; unset:
    the system's trusted CAs (genq/tls.py)."""
    tls_cert_file: str | None = None
    """Client certificate (PEM) for servers that require one (mutual TLS)."""
    tls_key_file: str | None = None
    """The client certificate's private key (unset: it is in the certificate file)."""
    tls_verify: bool = True
    """Verify the server's certificate and host name. False only on a test bench."""

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value


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
    fair_quantum: float = Field(2048.0, gt=0)
    """Under `fair`: tokens of recent demand a tenant may have before its jobs queue one turn
    lower (one more per doubling; scheduler/turns.py)."""
    fair_horizon: float = Field(60.0, gt=0)
    """Under `fair`: seconds over which a tenant's demand decays (time constant): a tenant
    idle for a few horizons queues at the top turn again."""


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
    fair_levels: float = Field(2.0, ge=0, le=64)
    """Under `fair`: how many levels below the best held score a less-served tenant may be
    picked; it widens the starvation bound by fair_levels·α/β seconds."""
    refill_wait: float = Field(0.1, ge=0, le=10)
    """Seconds admission waits for a level's window to refill before admitting worse jobs
    (scheduler/refill.py): longer than a broker round trip, short enough that a level whose
    queue ran dry holds nothing up for long. 0 turns the wait off."""
    hold_seconds: float = Field(1.0, ge=0, le=3600)
    """A worker whose engine has been full, admitting nothing, this long gives back the jobs
    it holds unstarted and stops consuming until a slot frees: a busy or slow worker must not
    keep jobs from an idle one. 0: never (a worker always holds its window)."""
    admit_headroom: int = Field(0, ge=0)
    """Jobs admitted beyond max_num_seqs so a freed batch slot is refilled without waiting on
    the broker. They wait inside vLLM, outside genq's ordering; keep it small."""


_MIB = 1024 * 1024


class GatewaySettings(ClientSettings):
    """`genq gateway`: the HTTP front door. It submits through a `producers.Client`, so the
    client's settings (default max_tokens, result cache, default tenant) apply to it too."""

    gateway_host: str = "127.0.0.1"
    """Address the gateway binds to; API keys are required by default off loopback."""
    gateway_port: int = Field(8000, ge=1, le=65535)
    """TCP port the gateway listens on."""
    api_keys: Literal["auto", "on", "off"] = "auto"
    """API keys: `on`, `off` (local use: every job is the default tenant's, or the one a
    request names), or `auto`: on unless the gateway binds to a loopback address."""
    max_body_bytes: int = Field(8 * _MIB, ge=1024, le=1024 * _MIB)
    """Largest request body in bytes (413 above it), except file uploads."""
    max_file_bytes: int = Field(100 * _MIB, ge=1024, le=2048 * _MIB)
    """Largest upload to POST /v1/files in bytes (413 above it). Files live in Redis."""
    max_jobs_per_request: int = Field(1000, ge=1, le=100_000)
    """Most jobs one POST /v1/jobs (a list) or one completion (prompts x n) may create."""
    tenant_queued_limit: int = Field(50_000, ge=0, le=100_000_000)
    """Queued jobs a tenant may have (submitted through the gateway) before new ones get 429;
    0: no limit."""
    model_queued_limit: int = Field(200_000, ge=0, le=100_000_000)
    """Messages waiting in a model's level queues (all producers) before new jobs get 429;
    0: no limit."""
    queue_depth_ttl: float = Field(1.0, ge=0, le=60)
    """Seconds a measured queue depth is reused before the broker is asked again."""
    retry_after: int = Field(2, ge=1, le=3600)
    """Seconds a 429 asks the client to wait (the Retry-After header)."""
    completion_timeout: float = Field(600.0, gt=0, le=86_400)
    """Seconds a completion waits for its job before answering 504 (the job goes on:
    GET /v1/jobs/{id} has it; the ID is in the X-Genq-Job-Ids header)."""
    max_wait: float = Field(60.0, ge=0, le=3600)
    """Longest `wait` a GET /v1/jobs/{id} may ask for (a long poll), in seconds."""
    max_waiting: int = Field(20_000, ge=1, le=1_000_000)
    """Most requests one gateway process holds open waiting on jobs (completions, streams,
    long polls); past it new ones get 503 with Retry-After before any job is accepted."""
    gateway_redis_connections: int = Field(8, ge=2, le=1024)
    """Connections in the gateway's Redis pool (requests wait for a free one). The gateway
    holds at most this many plus 4, however many requests are open: see
    producers/gateway/context.py."""
    default_priority: int = Field(0, ge=0, le=63)
    """Level of a job or completion that names none (body `priority` or X-Genq-Priority)."""
    batch_priority: int = Field(0, ge=0, le=63)
    """Level every request of a Batch API batch runs at. Keep it at or below
    default_priority so bulk batches wait behind interactive calls."""
    max_batch_requests: int = Field(50_000, ge=1, le=1_000_000)
    """Most lines a Batch API input file may have."""
    batch_ttl: int = Field(7 * 86_400, ge=3600, le=365 * 86_400)
    """Seconds files and batches stay in Redis after they are created."""
    audit_log: str = "-"
    """Where audit lines (JSON, one per submit, cancel and key change) go: `-` for stderr,
    a file path to append to, or `off`."""
    max_prompt_tokens: int = Field(0, ge=0, le=10_000_000)
    """Most prompt tokens a completion or job may have (422 above it), counted with the
    model's tokenizer; 0: the model's context, as its workers advertise it (max_model_len,
    less one token for the output)."""
    tokenizers: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Tokenizer to count a model's prompt tokens with, by served model name
    (`tiny=/models/tiny,llama=meta-llama/Llama-3.1-8B-Instruct`); a model not named here
    uses the tokenizer its workers advertise, if this machine can load it."""

    @field_validator("tokenizers", mode="before")
    @classmethod
    def _split_tokenizers(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs = [p.strip() for p in value.split(",") if p.strip()]
        if any("=" not in p for p in pairs):
            raise ValueError("expected model=tokenizer pairs, comma-separated")
        return dict(p.split("=", 1) for p in pairs)

    @model_validator(mode="after")
    def _levels_in_range(self) -> GatewaySettings:
        for name in ("default_priority", "batch_priority"):
            if getattr(self, name) >= self.levels:
                raise ValueError(
                    f"{name}: {getattr(self, name)} is outside the levels 0..{self.levels - 1}"
                )
        return self

    @property
    def keys_required(self) -> bool:
        """Whether requests need an API key: `api_keys`, with `auto` resolved by the host."""
        if self.api_keys != "auto":
            return self.api_keys == "on"
        return not self.binds_loopback

    @property
    def binds_loopback(self) -> bool:
        return _is_loopback(self.gateway_host)


def _is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0-like wildcard: reachable from elsewhere
