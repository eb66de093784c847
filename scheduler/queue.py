"""The admission queue: the candidates a worker holds, and which one enters the engine next.

Policy apart from the loop (as vLLM's `create_request_queue`): a settings value names a
policy, `create_admission_queue` returns an object with `add / pop / peek / remove /
charge`, and the worker never looks at the policy name."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol

from scheduler.candidate import Candidate
from scheduler.fair import DEFAULT_FAIR_LEVELS, FairQueue
from scheduler.heap import KeyedHeap
from scheduler.score import static_key

__all__ = [
    "AdmissionQueue",
    "Candidate",
    "Policy",
    "create_admission_queue",
]


class Policy(str, enum.Enum):
    SCORE = "score"
    """α·priority + β·wait, across levels and tenants alike."""
    FCFS = "fcfs"
    """Enqueue order; priority ignored."""
    FAIR = "fair"
    """Score order with per-tenant fairness (VTC) inside a band of the best score."""


class AdmissionQueue(Protocol):
    def add(self, candidate: Candidate[Any]) -> None:
        """Hold a candidate; a second copy of a held job ID is ignored."""

    def pop(self) -> Candidate[Any]:
        """The next job to admit, no longer held (charges its `cost` under `fair`).
        IndexError if empty."""

    def peek(self) -> Candidate[Any]:
        """What `pop` would return, still held. IndexError if empty."""

    def remove(self, job_id: str) -> Candidate[Any] | None:
        """Stop holding a job (its message went back to the broker); None if not held."""

    def charge(self, tenant: str, tokens: float) -> None:
        """Service a tenant received after admission (output tokens); negative refunds.
        Only `fair` uses it; call it whatever the policy, the worker needn't know."""

    def __len__(self) -> int: ...

    def __contains__(self, job_id: object) -> bool: ...


def create_admission_queue(
    policy: Policy | str,
    *,
    alpha: float,
    beta: float,
    fair_levels: float = DEFAULT_FAIR_LEVELS,
    fair_weights: Mapping[str, float] | None = None,
) -> AdmissionQueue:
    """The queue for `policy`. `fair_levels` (the band, in priority levels) and
    `fair_weights` (tenant -> share, default 1) matter only to `fair`."""
    policy = Policy(policy)
    if policy is Policy.SCORE:
        return KeyedHeap(lambda c: static_key(c.priority, c.enqueued_at, alpha=alpha, beta=beta))
    if policy is Policy.FCFS:
        return KeyedHeap(lambda c: -c.enqueued_at)
    if policy is Policy.FAIR:
        return FairQueue(alpha=alpha, beta=beta, fair_levels=fair_levels, weights=fair_weights)
    raise ValueError(f"policy: unknown {policy!r}")  # pragma: no cover - Enum() raised first
