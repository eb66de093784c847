"""Ordering policy: the score, the admission queue, the starvation bound. Pure logic: no
I/O, no clock reads (callers pass `now`), no vLLM."""

from __future__ import annotations

from scheduler.queue import AdmissionQueue, Candidate, Policy, create_admission_queue
from scheduler.score import score, starvation_bound, static_key

__all__ = [
    "AdmissionQueue",
    "Candidate",
    "Policy",
    "create_admission_queue",
    "score",
    "starvation_bound",
    "static_key",
]
