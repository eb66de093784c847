"""What travels between genq's parts, written and read in one place.

Job messages are Celery task messages (protocol v2), written and read without a Celery app.
Producers publish them with pika; workers read them; `celery` tooling and Flower read them
too, because they are ordinary Celery task messages for the task `genq.generate` whose only
keyword argument is the job spec. genq's own facts ride in headers prefixed `genq_`: the
enqueue time is set once at submit and carried through every republish, so a job keeps its
age (and so its score) when it comes back after a worker died.

Besides the messages themselves, this module names every other literal two sides of a
boundary must agree on: the AMQP properties of a job message (producers/publisher.py and the
worker's broker link), the headers a worker adds to a message it republishes or dead-letters
(read back by the worker and by `genq dead`), the fields of a streaming job's progress entries
(workers/progress.py writes them, the gateway's relay reads them), and how a job's message is
rebuilt from its record to be published again."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genq.errors import ValidationError
from genq.names import TASK_NAME
from genq.schema import JobSpec, parse_spec

__all__ = [
    "CONTENT_ENCODING",
    "CONTENT_TYPE",
    "CRASHES_HEADER",
    "DEADLINE_AT_HEADER",
    "DEAD_ATTEMPTS_HEADER",
    "DEAD_REASON_HEADER",
    "ENQUEUED_AT_HEADER",
    "PERSISTENT",
    "PRIORITY_HEADER",
    "PROGRESS_ATTEMPT",
    "PROGRESS_END",
    "PROGRESS_END_ERROR",
    "PROGRESS_END_OK",
    "PROGRESS_OFFSET",
    "PROGRESS_TEXT",
    "TaskMessage",
    "crashes",
    "dead_letter_attempts",
    "dead_letter_headers",
    "dead_letter_reason",
    "decode_task",
    "encode_task",
    "message_job_id",
    "message_properties",
]

# -- AMQP message properties ---------------------------------------------------------------
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
PERSISTENT = 2
"""AMQP delivery mode 2: the broker writes the message to disk (it survives a restart)."""

# -- Headers ---------------------------------------------------------------------------------
# AMQP tables carry no float in pika's encoder: times travel as decimal strings.
ENQUEUED_AT_HEADER = "genq_enqueued_at"
"""When the job was first submitted (Unix seconds, a decimal string); kept on republish."""
DEADLINE_AT_HEADER = "genq_deadline_at"
"""When the job expires (Unix seconds, a decimal string), or None."""
PRIORITY_HEADER = "genq_priority"
"""The job's priority level."""
CRASHES_HEADER = "genq_crashes"
"""Engine deaths this job was running at (absent: none); see workers/courier.py."""
DEAD_REASON_HEADER = "x-genq-reason"
"""On a dead-lettered message: why genq gave up on it."""
DEAD_ATTEMPTS_HEADER = "x-genq-attempts"
"""On a dead-lettered message: how many times it was started."""

# A message RabbitMQ dead-lettered on its own (rejected, expired) carries no genq reason.
_DEAD_BY_BROKER = "dead-lettered by RabbitMQ"

# -- Progress stream entries (names.progress_key) -----------------------------------------
# A streaming job's text goes out as entries {a, o, t}: the attempt that wrote it, its
# character offset in the whole text, the text; then one {a, end} entry, `ok` or `error`.
# One letter each: a long job writes thousands of entries.
PROGRESS_ATTEMPT = "a"
PROGRESS_OFFSET = "o"
PROGRESS_TEXT = "t"
PROGRESS_END = "end"
PROGRESS_END_OK = "ok"
"""The text is complete; the record is stored right after."""
PROGRESS_END_ERROR = "error"
"""That attempt ended with nothing more; the record says whether another follows."""

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

    @classmethod
    def from_record(cls, job_id: str, raw: Mapping[str, str]) -> TaskMessage:
        """The message that runs a job, rebuilt from its record (genq/store) to publish it
        again. `KeyError` or `ValueError` (pydantic's included) if the record lacks or garbles
        a field the message needs."""
        deadline_at = raw.get("deadline_at")
        return cls(
            job_id=job_id,
            spec=JobSpec.model_validate_json(raw["spec"]),
            enqueued_at=float(raw["enqueued_at"]),
            deadline_at=float(deadline_at) if deadline_at else None,
            attempts=int(raw.get("attempts", 0)),
        )

    def encode(self, *, attempts: int | None = None) -> tuple[dict[str, Any], bytes]:
        """Headers and body of this job's message, carrying `attempts` (default: its own)."""
        return encode_task(
            self.spec,
            job_id=self.job_id,
            enqueued_at=self.enqueued_at,
            deadline_at=self.deadline_at,
            attempts=self.attempts if attempts is None else attempts,
        )


def message_properties(job_id: str, headers: dict[str, Any], *, turn: int) -> dict[str, Any]:
    """The AMQP properties of a job message, as keyword arguments of `pika.BasicProperties`:
    JSON, persistent, the job ID as correlation ID (what a basic.return names), and `turn`
    as the message priority (its place in its level queue, scheduler/turns.py)."""
    return {
        "content_type": CONTENT_TYPE,
        "content_encoding": CONTENT_ENCODING,
        "delivery_mode": PERSISTENT,
        "correlation_id": job_id,
        "headers": headers,
        "priority": turn,
    }


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
        ENQUEUED_AT_HEADER: repr(enqueued_at),
        DEADLINE_AT_HEADER: None if deadline_at is None else repr(deadline_at),
        PRIORITY_HEADER: spec.priority,
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
        _args, kwargs, _embed = json.loads(body)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"body: not a Celery v2 JSON body ({exc})", field="body") from None
    if not isinstance(kwargs, dict) or "spec" not in kwargs:
        raise ValidationError("body: kwargs.spec missing", field="spec")
    spec = parse_spec(kwargs["spec"])
    enqueued_at = _time(headers.get(ENQUEUED_AT_HEADER))
    if enqueued_at is None:
        raise ValidationError(
            f"headers.{ENQUEUED_AT_HEADER}: missing enqueue time", field="enqueued_at"
        )
    deadline_at = _time(headers.get(DEADLINE_AT_HEADER))
    retries = headers.get("retries") or 0
    return TaskMessage(
        job_id=job_id,
        spec=spec,
        enqueued_at=enqueued_at,
        deadline_at=deadline_at,
        attempts=int(retries) if isinstance(retries, int) else 0,
    )


def message_job_id(headers: Mapping[str, Any]) -> str | None:
    """The task ID of any message, even one that is not a valid job (None: it has none)."""
    job_id = headers.get("id")
    return job_id if isinstance(job_id, str) else None


def crashes(headers: Mapping[str, Any]) -> int:
    """Engine deaths a delivered job was running at (a crash suspect if > 0)."""
    value = headers.get(CRASHES_HEADER)
    return value if isinstance(value, int) and value > 0 else 0


def dead_letter_headers(
    headers: Mapping[str, Any], *, reason: str, attempts: int
) -> dict[str, Any]:
    """A message's headers as it goes to its model's dead-letter queue: why, and after how
    many attempts."""
    return {**headers, DEAD_REASON_HEADER: reason, DEAD_ATTEMPTS_HEADER: attempts}


def dead_letter_reason(headers: Mapping[str, Any]) -> str:
    """Why a message in a dead-letter queue is there."""
    return str(headers.get(DEAD_REASON_HEADER, _DEAD_BY_BROKER))


def dead_letter_attempts(headers: Mapping[str, Any]) -> int:
    """How many times a dead-lettered job was started (0: never, or not known)."""
    return int(headers.get(DEAD_ATTEMPTS_HEADER, 0) or 0)


def _time(raw: Any) -> float | None:
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        return float(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
