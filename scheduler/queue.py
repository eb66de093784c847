"""The admission queue: the candidates a worker holds, and which one enters the engine next.

Policy apart from the loop (as vLLM's `create_request_queue`): a settings value names a
policy, `create_admission_queue` returns an object with `add / pop / peek / remove`, and the
worker never looks at the policy name."""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from scheduler.score import static_key

__all__ = [
    "AdmissionQueue",
    "Candidate",
    "Policy",
    "create_admission_queue",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    """A job the worker holds but has not started. `payload` is opaque to the scheduler."""

    job_id: str
    priority: int
    enqueued_at: float
    tenant: str = "default"
    payload: Any = field(default=None, compare=False)


class Policy(str, enum.Enum):
    SCORE = "score"
    FCFS = "fcfs"


class AdmissionQueue(Protocol):
    def add(self, candidate: Candidate[Any]) -> None: ...
    def pop(self) -> Candidate[Any]: ...
    def peek(self) -> Candidate[Any]: ...
    def remove(self, job_id: str) -> Candidate[Any] | None: ...
    def __len__(self) -> int: ...


class _KeyedHeap:
    """A max-heap on a key function, with removal by job ID (lazy: removed entries are
    skipped when they surface, so remove is O(1) and pop stays O(log n))."""

    def __init__(self, key: Callable[[Candidate[Any]], float]) -> None:
        self._key = key
        self._heap: list[tuple[float, float, int, Candidate[Any]]] = []
        self._live: dict[str, Candidate[Any]] = {}
        self._seq = itertools.count()

    def add(self, candidate: Candidate[Any]) -> None:
        if candidate.job_id in self._live:
            return  # a redelivered copy of a job already held: one is enough
        self._live[candidate.job_id] = candidate
        # Ties: the older job first, then arrival order here.
        entry = (-self._key(candidate), candidate.enqueued_at, next(self._seq), candidate)
        heapq.heappush(self._heap, entry)

    def _top(self) -> Candidate[Any]:
        while self._heap:
            candidate = self._heap[0][3]
            if self._live.get(candidate.job_id) is candidate:
                return candidate
            heapq.heappop(self._heap)
        raise IndexError("admission queue is empty")

    def peek(self) -> Candidate[Any]:
        return self._top()

    def pop(self) -> Candidate[Any]:
        candidate = self._top()
        heapq.heappop(self._heap)
        del self._live[candidate.job_id]
        return candidate

    def remove(self, job_id: str) -> Candidate[Any] | None:
        return self._live.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._live


def create_admission_queue(policy: Policy | str, *, alpha: float, beta: float) -> AdmissionQueue:
    policy = Policy(policy)
    if policy is Policy.SCORE:
        return _KeyedHeap(lambda c: static_key(c.priority, c.enqueued_at, alpha=alpha, beta=beta))
    if policy is Policy.FCFS:
        return _KeyedHeap(lambda c: -c.enqueued_at)
    raise ValueError(f"policy: unknown {policy!r}")  # pragma: no cover - Enum() raised first
