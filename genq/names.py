"""Every RabbitMQ and Redis name genq uses. No queue, exchange, routing key or key is built
anywhere else, so a rename is one edit and two components can never disagree."""

from __future__ import annotations

__all__ = [
    "API_KEYS",
    "API_KEY_PREFIX",
    "BATCH_LOCK_PREFIX",
    "BATCH_PREFIX",
    "BATCH_REQUESTS_PREFIX",
    "CACHE_PREFIX",
    "CACHE_STATS",
    "CANCEL_CHANNEL",
    "CELERY_RESULT_CHANNELS",
    "CELERY_RESULT_PREFIX",
    "DEAD_EXCHANGE",
    "DEMAND_PREFIX",
    "EXCHANGE",
    "FILE_CONTENT_PREFIX",
    "FILE_PREFIX",
    "FLIGHT_PREFIX",
    "FOLLOWERS_PREFIX",
    "GATEWAY_WAKE_PREFIX",
    "JOB_PREFIX",
    "LEASES",
    "PROGRESS_PREFIX",
    "TASK_NAME",
    "TENANT_BATCHES_PREFIX",
    "TENANT_FILES_PREFIX",
    "TENANT_QUEUED_PREFIX",
    "WORKER_STATS_PREFIX",
    "api_key_key",
    "batch_key",
    "batch_lock_key",
    "batch_requests_key",
    "cache_entry_key",
    "celery_result_key",
    "dead_queue",
    "dead_routing_key",
    "demand_key",
    "file_content_key",
    "file_key",
    "flight_key",
    "followers_key",
    "gateway_wake_key",
    "idempotency_key",
    "idle_queue",
    "job_key",
    "level_queue",
    "level_routing_key",
    "progress_key",
    "tenant_batches_key",
    "tenant_files_key",
    "tenant_queued_key",
    "worker_stats_key",
]

# RabbitMQ --------------------------------------------------------------------------------
EXCHANGE = "genq"
"""Direct exchange every job is published to; routing key `<model>.p<level>`."""

DEAD_EXCHANGE = "genq.dead"
"""Direct exchange level queues dead-letter into; routing key `<model>.dead`."""

TASK_NAME = "genq.generate"
"""The Celery task name in every job message, so Flower and `celery` tooling show it."""


def level_routing_key(model: str, level: int) -> str:
    return f"{model}.p{level}"


def level_queue(model: str, level: int) -> str:
    return f"genq.{model}.p{level}"


def dead_routing_key(model: str) -> str:
    return f"{model}.dead"


def dead_queue(model: str) -> str:
    return f"genq.{model}.dead"


def idle_queue(worker: str) -> str:
    """The queue Celery's own task consumer listens on. Nothing is ever sent there: jobs are
    consumed by the GPU consumer, which needs per-level credit Celery's consumer can't give."""
    return f"genq.celery.{worker}"


# Redis -----------------------------------------------------------------------------------
PREFIX = "genq:"

CELERY_RESULT_PREFIX = "celery-task-meta-"
"""Celery's Redis result backend key prefix (Celery's name, not ours): AsyncResult reads it."""

CELERY_RESULT_CHANNELS = CELERY_RESULT_PREFIX + "*"
"""Pattern of the pub/sub channels a job's end is announced on: Celery's result backend
publishes each result on a channel named like its key, and genq's scripts do the same."""

CANCEL_CHANNEL = PREFIX + "cancel"
"""Pub/sub channel: a job ID published here is aborted by whichever worker runs it."""

LEASES = PREFIX + "leases"
"""Sorted set of admitted jobs, scored by lease expiry (Unix seconds)."""

WORKER_STATS_PREFIX = PREFIX + "worker:"

JOB_PREFIX = PREFIX + "job:"

# The result cache and single flight (genq/cache.py). The Lua scripts in genq/store.py reach
# other jobs' keys (a leader's followers) by these prefixes, passed in as arguments.
CACHE_PREFIX = PREFIX + "cache:"
"""A stored result (hash), by cache key; it expires after `cache_ttl`."""

CACHE_STATS = PREFIX + "cache-stats"
"""Hash of counters: `hits`, `misses`, `followers` (see `JobStore.cache_stats`)."""

FLIGHT_PREFIX = PREFIX + "flight:"
"""The job ID now running (or queued for) a cache key: the single flight's leader."""

FOLLOWERS_PREFIX = PREFIX + "followers:"
"""List of job IDs waiting on a leader's result, by the leader's job ID."""


PROGRESS_PREFIX = PREFIX + "progress:"
"""A streaming job's text as it is generated: a Redis Stream per job (workers/progress.py
writes it, the gateway relays it). A Stream, not pub/sub: a reader that arrives late still
reads from the beginning. Entries are `a` (the attempt), then either `o` (the character
offset of the piece in the whole text) and `t` (the piece), or `end` (`ok`: the text is
complete and the result is about to be stored; `error`: this attempt gave no result). The
writer caps its length and sets a TTL on every write, so an abandoned stream goes away."""


DEMAND_PREFIX = PREFIX + "demand:"
"""Hash per model: tenant -> its decaying demand in tokens and when it was last updated
(`<tokens> <unix time>`), for tenant turns under the fair policy (genq/demand.py)."""


def demand_key(model: str) -> str:
    return f"{DEMAND_PREFIX}{model}"


def progress_key(job_id: str) -> str:
    return f"{PROGRESS_PREFIX}{job_id}"


def job_key(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


def reap_claim_key(job_id: str) -> str:
    """Held briefly by the one reaper republishing this job's expired lease."""
    return f"{job_key(job_id)}:reaping"


def celery_result_key(job_id: str) -> str:
    return f"{CELERY_RESULT_PREFIX}{job_id}"


def idempotency_key(tenant: str, key: str) -> str:
    return f"{PREFIX}idem:{tenant}:{key}"


def worker_stats_key(worker: str) -> str:
    return f"{WORKER_STATS_PREFIX}{worker}"


def cache_entry_key(cache_key: str) -> str:
    return f"{CACHE_PREFIX}{cache_key}"


def flight_key(cache_key: str) -> str:
    return f"{FLIGHT_PREFIX}{cache_key}"


def followers_key(job_id: str) -> str:
    return f"{FOLLOWERS_PREFIX}{job_id}"


# The HTTP gateway (producers/gateway/) -----------------------------------------------------
API_KEY_PREFIX = PREFIX + "apikey:"
"""An API key's hash (tenant, name, created_at), by the SHA-256 of the key: never the key."""

API_KEYS = PREFIX + "apikeys"
"""Hash of every API key: its short public ID -> the SHA-256 it is stored under."""

TENANT_QUEUED_PREFIX = PREFIX + "gw:queued:"
"""Sorted set of a tenant's jobs submitted through the gateway and maybe still queued, by
enqueue time; ended jobs are pruned lazily (producers/gateway/limits.py)."""

FILE_PREFIX = PREFIX + "file:"
"""A Batch API file's metadata (hash); its content is under FILE_CONTENT_PREFIX."""

FILE_CONTENT_PREFIX = PREFIX + "file-content:"

BATCH_PREFIX = PREFIX + "batch:"
"""A Batch API batch (hash); its requests are under BATCH_REQUESTS_PREFIX."""

BATCH_REQUESTS_PREFIX = PREFIX + "batch-requests:"
"""List of a batch's requests, in input order: JSON `[custom_id, job_id]`."""

BATCH_LOCK_PREFIX = PREFIX + "batch-lock:"
"""Held by the gateway that writes a finished batch's output files."""

TENANT_FILES_PREFIX = PREFIX + "gw:files:"
TENANT_BATCHES_PREFIX = PREFIX + "gw:batches:"

GATEWAY_WAKE_PREFIX = PREFIX + "gw:wake:"
"""A Stream per gateway process, written to wake its progress reader's blocked XREAD when a
new stream opens (producers/gateway/streams.py); it expires soon after its last use."""


def api_key_key(digest: str) -> str:
    return f"{API_KEY_PREFIX}{digest}"


def tenant_queued_key(tenant: str) -> str:
    return f"{TENANT_QUEUED_PREFIX}{tenant}"


def file_key(file_id: str) -> str:
    return f"{FILE_PREFIX}{file_id}"


def file_content_key(file_id: str) -> str:
    return f"{FILE_CONTENT_PREFIX}{file_id}"


def tenant_files_key(tenant: str) -> str:
    """Sorted set of a tenant's file IDs, by creation time."""
    return f"{TENANT_FILES_PREFIX}{tenant}"


def batch_key(batch_id: str) -> str:
    return f"{BATCH_PREFIX}{batch_id}"


def batch_requests_key(batch_id: str) -> str:
    return f"{BATCH_REQUESTS_PREFIX}{batch_id}"


def batch_lock_key(batch_id: str) -> str:
    return f"{BATCH_LOCK_PREFIX}{batch_id}"


def tenant_batches_key(tenant: str) -> str:
    """Sorted set of a tenant's batch IDs, by creation time."""
    return f"{TENANT_BATCHES_PREFIX}{tenant}"


def gateway_wake_key(gateway_id: str) -> str:
    return f"{GATEWAY_WAKE_PREFIX}{gateway_id}"
