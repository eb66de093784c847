"""Job messages in Celery's task message protocol v2, written and read without a Celery app.

Producers publish these with pika; workers read them; `celery` tooling and Flower read them
too, because they are ordinary Celery task messages for the task `genq.generate` whose only
keyword argument is the job spec. genq's own facts ride in headers prefixed `genq_`: the
enqueue time is set once at submit and carried through every republish, so a job keeps its
age (and so its score) when it comes back after a worker died."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

from genq.errors import ValidationError
from genq.names import TASK_NAME
from genq.schema import JobSpec, parse_spec

__all__ = ["CONTENT_TYPE", "TaskMessage", "decode_task", "encode_task"]

CONTENT_TYPE = "application/json"
_ORIGIN = f"genq@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True, slots=True)
class TaskMessage:
    job_id: str
    spec: JobSpec
    enqueued_at: float
    deadline_at: float | None
    attempts: int
    """Attempts already made before this delivery (0 for a fresh job)."""


def encode_task(
    spec: JobSpec,
    *,
    job_id: str,
    enqueued_at: float,
    deadline_at: float | None,
    attempts: int = 0,
) -> tuple[dict[str, Any], bytes]:
    """Headers and body of one job's Celery task message."""
    spec_data = spec.model_dump(mode="json", exclude_defaults=True)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": TASK_NAME,
        "id": job_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": attempts,
        "timelimit": [None, None],
        "root_id": job_id,
        "parent_id": None,
        "argsrepr": "()",
        # What Flower shows as the task's arguments: the routing facts, not the prompt.
        "kwargsrepr": f"{{'model': {spec.model!r}, 'priority': {spec.priority}}}",
        "origin": _ORIGIN,
        "ignore_result": False,
        # AMQP tables carry no float in pika's encoder: times travel as decimal strings.
        "genq_enqueued_at": repr(enqueued_at),
        "genq_deadline_at": None if deadline_at is None else repr(deadline_at),
        "genq_priority": spec.priority,
    }
    body = json.dumps([[], {"spec": spec_data}, _EMBED], separators=(",", ":"))
    return headers, body.encode()


def decode_task(headers: dict[str, Any] | None, body: bytes) -> TaskMessage:
    """Read a job message; `ValidationError` says why it is not one (it is dead-lettered)."""
    if not headers or headers.get("task") != TASK_NAME:
        task = (headers or {}).get("task")
        raise ValidationError(f"headers.task: expected {TASK_NAME!r}, got {task!r}", field="task")
    job_id = headers.get("id")
    if not isinstance(job_id, str) or not job_id:
        raise ValidationError("headers.id: missing task ID", field="id")
    try:
        args, kwargs, _embed = json.loads(body)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"body: not a Celery v2 JSON body ({exc})", field="body") from None
    if not isinstance(kwargs, dict) or "spec" not in kwargs:
        raise ValidationError("body: kwargs.spec missing", field="spec")
    spec = parse_spec(kwargs["spec"])
    enqueued_at = _time(headers.get("genq_enqueued_at"))
    if enqueued_at is None:
        raise ValidationError("headers.genq_enqueued_at: missing enqueue time", field="enqueued_at")
    deadline_at = _time(headers.get("genq_deadline_at"))
    retries = headers.get("retries") or 0
    return TaskMessage(
        job_id=job_id,
        spec=spec,
        enqueued_at=enqueued_at,
        deadline_at=deadline_at,
        attempts=int(retries) if isinstance(retries, int) else 0,
    )


def _time(raw: Any) -> float | None:
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        return float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
