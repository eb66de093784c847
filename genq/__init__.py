"""genq: a fleet for LLM generation jobs (RabbitMQ + Celery + vLLM, results in Redis)."""

from __future__ import annotations

from genq.errors import GenqError, NotFoundError, PublishError, ValidationError
from genq.schema import ChatMessage, JobRecord, JobSpec, JobState, Usage
from genq.settings import ClientSettings, FleetSettings, WorkerSettings

__all__ = [
    "ChatMessage",
    "ClientSettings",
    "FleetSettings",
    "GenqError",
    "JobRecord",
    "JobSpec",
    "JobState",
    "NotFoundError",
    "PublishError",
    "Usage",
    "ValidationError",
    "WorkerSettings",
]
__version__ = "0.1.0"
