"""Every RabbitMQ and Redis name genq uses. No queue, exchange, routing key or key is built
anywhere else, so a rename is one edit and two components can never disagree."""

from __future__ import annotations

__all__ = [
    "CANCEL_CHANNEL",
    "CELERY_RESULT_PREFIX",
    "DEAD_EXCHANGE",
    "EXCHANGE",
    "TASK_NAME",
    "celery_result_key",
    "dead_queue",
    "dead_routing_key",
    "idempotency_key",
    "job_key",
    "level_queue",
    "level_routing_key",
    "idle_queue",
    "LEASES",
    "WORKER_STATS_PREFIX",
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

CANCEL_CHANNEL = PREFIX + "cancel"
"""Pub/sub channel: a job ID published here is aborted by whichever worker runs it."""

LEASES = PREFIX + "leases"
"""Sorted set of admitted jobs, scored by lease expiry (Unix seconds)."""

WORKER_STATS_PREFIX = PREFIX + "worker:"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def celery_result_key(job_id: str) -> str:
    return f"{CELERY_RESULT_PREFIX}{job_id}"


def idempotency_key(tenant: str, key: str) -> str:
    return f"{PREFIX}idem:{tenant}:{key}"


def worker_stats_key(worker: str) -> str:
    return f"{WORKER_STATS_PREFIX}{worker}"
