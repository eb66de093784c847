"""A max-heap of candidates on a static key, with removal by job ID. The building block of
every policy: `score` and `fcfs` are one heap each, `fair` one heap per tenant."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from scheduler.candidate import Candidate

__all__ = ["KeyedHeap"]


class KeyedHeap:
    """A max-heap on a key function, with removal by job ID (lazy: removed entries are
    skipped when they surface, so remove is O(1) and pop stays O(log n) amortized).

    The key must be static (a function of the candidate alone): that is what makes a heap
    enough, see `scheduler.score`. Ties go to the older job, then to the earlier `add`."""

    def __init__(self, key: Callable[[Candidate[Any]], float]) -> None:
        self._key = key
        self._heap: list[tuple[float, float, int, Candidate[Any]]] = []
        self._live: dict[str, Candidate[Any]] = {}
        self._seq = itertools.count()

    def add(self, candidate: Candidate[Any]) -> None:
        if candidate.job_id in self._live:
            return  # a redelivered copy of a job already held: one is enough
        self._live[candidate.job_id] = candidate
        entry = (-self._key(candidate), candidate.enqueued_at, next(self._seq), candidate)
        heapq.heappush(self._heap, entry)

    def _top(self) -> Candidate[Any]:
        while self._heap:
            candidate = self._heap[0][3]
            if self._live.get(candidate.job_id) is candidate:
                return candidate
            heapq.heappop(self._heap)
        raise IndexError("admission queue is empty")

    def top_key(self) -> float:
        """The best key held (the fair policy compares tenants by it)."""
        self._top()
        return -self._heap[0][0]

    def peek(self) -> Candidate[Any]:
        return self._top()

    def pop(self) -> Candidate[Any]:
        candidate = self._top()
        heapq.heappop(self._heap)
        del self._live[candidate.job_id]
        return candidate

    def remove(self, job_id: str) -> Candidate[Any] | None:
        return self._live.pop(job_id, None)

    def charge(self, tenant: str, tokens: float) -> None:
        """Service received: ignored, a single heap's order does not depend on it."""

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._live
