"""The value Celery's Redis result backend stores for a job, so `AsyncResult(id).get()` works.

Written here by the worker (FINISH) and the client (CANCEL), and in Lua by the single-flight
library (flight.lua's `meta`) for followers and cache hits: tests/unit/test_store_results.py
pins the two builders to the same JSON value."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from genq.schema import JobState

__all__ = ["celery_meta", "date_done"]

_CELERY_STATES = {
    JobState.SUCCEEDED: "SUCCESS",
    JobState.FAILED: "FAILURE",
    JobState.CANCELLED: "REVOKED",
    JobState.EXPIRED: "REVOKED",
}


def date_done() -> str:
    """Celery's `date_done`: now, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat()


def celery_meta(
    job_id: str, state: JobState, result: Any, *, error: str | None = None, date: str | None = None
) -> str:
    """The value Celery's Redis result backend stores, so `AsyncResult(id).get()` works."""
    payload: Any
    if state is JobState.SUCCEEDED:
        payload = result
    elif state is JobState.FAILED:
        payload = {
            "exc_type": "JobFailedError",
            "exc_message": [error or "failed"],
            "exc_module": "genq.errors",
        }
    else:
        payload = {
            "exc_type": "TaskRevokedError",
            "exc_message": [error or state.value],
            "exc_module": "celery.exceptions",
        }
    return json.dumps(
        {
            "status": _CELERY_STATES[state],
            "result": payload,
            "traceback": None,
            "children": [],
            "date_done": date or date_done(),
            "task_id": job_id,
        }
    )
