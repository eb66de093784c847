"""What the worker tells the world about its jobs: one call per transition.

The consumer calls `Observers.<transition>` once where a job changes phase or ends; each
observer turns that into what it keeps: Celery task events for Flower (`CeleryEvents`), the
counters in the worker's heartbeat (`Stats`), later metrics. One call per transition is
what keeps them in agreement: nothing counts a dead letter that Flower doesn't see, or the
other way round. dramatiq's middleware seam, without the plug-in machinery."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from workers.events import TaskEvents

if TYPE_CHECKING:
    from workers.jobs import Job

__all__ = ["CeleryEvents", "Observer", "Observers", "Stats"]


class Observer:
    """Every transition, doing nothing: an observer overrides the ones it keeps."""

    def received(self, job: Job) -> None: ...
    def started(self, job: Job) -> None: ...
    def succeeded(self, job: Job, *, completion_tokens: int, runtime: float) -> None: ...
    def failed(self, job_id: str, *, error: str) -> None: ...
    def revoked(self, job_id: str, *, expired: bool = False) -> None: ...
    def dead_lettered(self, job_id: str | None, *, reason: str) -> None: ...
    def handed_back(self, job: Job, *, why: str) -> None: ...
    def early_aborted(self, job: Job) -> None: ...
    def held_off(self, given_back: int) -> None: ...
    def surged(self) -> None: ...
    def reaped(self, count: int) -> None: ...


class Observers(Observer):
    """The observers of one worker, each told every transition in turn."""

    def __init__(self, *observers: Observer) -> None:
        self._all = observers

    def received(self, job: Job) -> None:
        for o in self._all:
            o.received(job)

    def started(self, job: Job) -> None:
        for o in self._all:
            o.started(job)

    def succeeded(self, job: Job, *, completion_tokens: int, runtime: float) -> None:
        for o in self._all:
            o.succeeded(job, completion_tokens=completion_tokens, runtime=runtime)

    def failed(self, job_id: str, *, error: str) -> None:
        for o in self._all:
            o.failed(job_id, error=error)

    def revoked(self, job_id: str, *, expired: bool = False) -> None:
        for o in self._all:
            o.revoked(job_id, expired=expired)

    def dead_lettered(self, job_id: str | None, *, reason: str) -> None:
        for o in self._all:
            o.dead_lettered(job_id, reason=reason)

    def handed_back(self, job: Job, *, why: str) -> None:
        for o in self._all:
            o.handed_back(job, why=why)

    def early_aborted(self, job: Job) -> None:
        for o in self._all:
            o.early_aborted(job)

    def held_off(self, given_back: int) -> None:
        for o in self._all:
            o.held_off(given_back)

    def surged(self) -> None:
        for o in self._all:
            o.surged()

    def reaped(self, count: int) -> None:
        for o in self._all:
            o.reaped(count)


class Stats(Observer):
    """The counters a worker publishes in its heartbeat (`genq status`, Flower, tests)."""

    KEYS = (
        "admitted",
        "succeeded",
        "failed",
        "handed_back",
        "reaped",
        "dead_lettered",
        "held_off",
        "early_aborted",
        "surges",
    )

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter(dict.fromkeys(self.KEYS, 0))

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def started(self, job: Job) -> None:
        self.counts["admitted"] += 1

    def succeeded(self, job: Job, *, completion_tokens: int, runtime: float) -> None:
        self.counts["succeeded"] += 1

    def failed(self, job_id: str, *, error: str) -> None:
        self.counts["failed"] += 1

    def dead_lettered(self, job_id: str | None, *, reason: str) -> None:
        self.counts["dead_lettered"] += 1

    def handed_back(self, job: Job, *, why: str) -> None:
        self.counts["handed_back"] += 1

    def early_aborted(self, job: Job) -> None:
        self.counts["early_aborted"] += 1

    def held_off(self, given_back: int) -> None:
        self.counts["held_off"] += 1

    def surged(self) -> None:
        self.counts["surges"] += 1

    def reaped(self, count: int) -> None:
        self.counts["reaped"] += count


class CeleryEvents(Observer):
    """Celery task events, so Flower lists every job received / started / ended."""

    def __init__(self, events: TaskEvents) -> None:
        self._events = events

    def received(self, job: Job) -> None:
        self._events.received(
            job.job_id,
            kwargs=str(job.delivery.headers.get("kwargsrepr", "")),
            retries=job.message.attempts,
        )

    def started(self, job: Job) -> None:
        self._events.started(job.job_id)

    def succeeded(self, job: Job, *, completion_tokens: int, runtime: float) -> None:
        self._events.succeeded(job.job_id, result=f"{completion_tokens} tokens", runtime=runtime)

    def failed(self, job_id: str, *, error: str) -> None:
        self._events.failed(job_id, error=error)

    def revoked(self, job_id: str, *, expired: bool = False) -> None:
        self._events.revoked(job_id, expired=expired)
