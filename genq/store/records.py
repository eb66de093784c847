"""A job record: the Redis hash a job lives in, written at submit and read by `status`."""

from __future__ import annotations

from collections.abc import Mapping

from genq.schema import JobRecord, JobSpec, JobState, Usage

__all__ = ["decode_record", "new_record_fields"]


def new_record_fields(
    spec: JobSpec,
    *,
    job_id: str,
    tenant: str,
    enqueued_at: float,
    deadline_at: float | None,
    cache_key: str | None = None,
    cache_ttl: int = 0,
    cache_max_bytes: int = 0,
) -> dict[str, str]:
    """The hash of a job just accepted. The spec is kept so a job can be republished
    (`TaskMessage.from_record`). A cacheable job carries its cache key and the submitter's
    cache settings, which the worker that runs it applies when it stores the result."""
    fields = {
        "id": job_id,
        "state": JobState.QUEUED.value,
        "model": spec.model,
        "priority": str(spec.priority),
        "tenant": tenant,
        "enqueued_at": repr(enqueued_at),
        "deadline_at": "" if deadline_at is None else repr(deadline_at),
        "attempts": "0",
        "cached": "0",
        "spec": spec.model_dump_json(exclude_defaults=True),
    }
    if cache_key is not None:
        fields.update(
            cache_key=cache_key, cache_ttl=str(cache_ttl), cache_max_bytes=str(cache_max_bytes)
        )
    return fields


def _opt_float(raw: str | None) -> float | None:
    return float(raw) if raw else None


def decode_record(raw: Mapping[str, str]) -> JobRecord:
    usage = raw.get("usage")
    return JobRecord(
        id=raw["id"],
        state=JobState(raw["state"]),
        model=raw.get("model", ""),
        priority=int(raw.get("priority", 0)),
        tenant=raw.get("tenant", ""),
        enqueued_at=float(raw["enqueued_at"]),
        started_at=_opt_float(raw.get("started_at")),
        finished_at=_opt_float(raw.get("finished_at")),
        deadline_at=_opt_float(raw.get("deadline_at")),
        worker=raw.get("worker") or None,
        attempts=int(raw.get("attempts", 0)),
        text=raw.get("text"),
        finish_reason=raw.get("finish_reason") or None,
        usage=Usage.model_validate_json(usage) if usage else None,
        error=raw.get("error") or None,
        cached=raw.get("cached") == "1",
    )
