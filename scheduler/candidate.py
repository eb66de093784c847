"""A candidate: a job a worker holds but has not started. The unit every policy orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Candidate"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    """A job the worker holds but has not started. `payload` is opaque to the scheduler."""

    job_id: str
    priority: int
    enqueued_at: float
    tenant: str = "default"
    payload: T = field(default=None, compare=False)  # type: ignore[assignment]
    """What the caller keeps with it (the worker: its Job); a bare Candidate is
    Candidate[None]."""
    cost: float = 1.0
    """Service charged to the tenant when the job is admitted (`fair` policy only): its
    prompt tokens, as VTC charges input at admission. The default, 1, makes an unset cost
    count requests. Output tokens are charged later, with `AdmissionQueue.charge`."""
