"""Ordering policy: the score, the admission queue, the starvation bound, the fair policy and
the audit of an admission order. Pure logic: no I/O, no clock reads (callers pass `now`), no
vLLM."""

from __future__ import annotations

from scheduler.candidate import Candidate
from scheduler.fair import DEFAULT_FAIR_LEVELS, FairQueue
from scheduler.overtaking import Start, overtakings_past_bound
from scheduler.queue import AdmissionQueue, Policy, create_admission_queue
from scheduler.score import score, starvation_bound, static_key

__all__ = [
    "DEFAULT_FAIR_LEVELS",
    "AdmissionQueue",
    "Candidate",
    "FairQueue",
    "Policy",
    "Start",
    "create_admission_queue",
    "overtakings_past_bound",
    "score",
    "starvation_bound",
    "static_key",
]
