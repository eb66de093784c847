"""The jobs a worker has at hand, each in one phase, in one table.

A job enters the table when its message is delivered and leaves it when the worker is done
with it (it ended, went back to the broker, or turned out to be a copy). In between it is:

- `HELD`: delivered, waiting in the admission queue (the broker's unacked window);
- `ADMITTING`: chosen; its ADMIT is on its way to Redis and back (it may already be in the
  engine meanwhile: an early start);
- `RUNNING`: admitted here; its generation runs, its lease is renewed.

"Do I have this job, and in which phase" is one look-up, so a second copy of a job (a
republish that raced the original) is recognised in every phase alike."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genq.protocol import TaskMessage
from genq.settings import WorkerSettings
from scheduler import Candidate, static_key
from workers.broker import Delivery
from workers.courier import crashes

if TYPE_CHECKING:
    from workers.admission import EarlyStart

__all__ = ["Job", "JobTable", "Phase", "score_key"]


class Phase(enum.Enum):
    HELD = "held"
    ADMITTING = "admitting"
    RUNNING = "running"


@dataclass(slots=True, eq=False)
class Job:
    delivery: Delivery
    message: TaskMessage
    cost: float
    """Tokens charged to its tenant at admission (fair policy), trued up when it ends."""
    prompt: asyncio.Future[Any] | None = None
    """Its prompt, rendered (tokenized) while it was held: see Engine.render_soon."""
    phase: Phase = Phase.HELD
    cancel_requested: bool = False
    """A client cancelled it while it was admitting or running."""
    early: EarlyStart | None = None
    """Its generation in the engine while its ADMIT is on the way (admission.py)."""
    task: asyncio.Task[None] | None = None
    """Running: the task that runs it to its end (running.py)."""
    started: float = field(default_factory=time.monotonic)

    @property
    def job_id(self) -> str:
        return self.message.job_id

    @property
    def tenant(self) -> str:
        # genq's client always names it (Client.validate fills in the default tenant);
        # "default" is for a message published by other means.
        return self.message.spec.tenant or "default"

    @property
    def crashes(self) -> int:
        """Engine deaths it was running at before this attempt: > 0 makes it a crash
        suspect, which never shares the engine with another (see workers/courier.py)."""
        return crashes(self.delivery.headers)


class JobTable:
    """Every job at hand by ID, with a count per phase (the engine's room is a count)."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._counts = dict.fromkeys(Phase, 0)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def add(self, job: Job) -> None:
        if job.job_id in self._jobs:
            raise ValueError(f"job {job.job_id} is already at hand")
        self._jobs[job.job_id] = job
        self._counts[job.phase] += 1

    def move(self, job: Job, phase: Phase) -> None:
        self._counts[job.phase] -= 1
        job.phase = phase
        self._counts[phase] += 1

    def remove(self, job: Job) -> None:
        if self._jobs.get(job.job_id) is job:
            del self._jobs[job.job_id]
            self._counts[job.phase] -= 1

    def count(self, phase: Phase) -> int:
        return self._counts[phase]

    def in_phase(self, phase: Phase) -> Iterator[Job]:
        return (job for job in list(self._jobs.values()) if job.phase is phase)


def score_key(candidate: Candidate[Job], settings: WorkerSettings) -> float:
    """Its static key (scheduler/score.py): orders as `α·priority + β·wait` does."""
    return static_key(
        candidate.priority, candidate.enqueued_at, alpha=settings.alpha, beta=settings.beta
    )
