"""The score and its static key.

    score_i(t) = α·p_i + β·(t − t_i) = (α·p_i − β·t_i) + β·t

β·t is the same for every job at any instant, so ranking by score at any moment is ranking
by the static key k_i = α·p_i − β·t_i: a heap keyed by k never needs re-scoring."""

from __future__ import annotations

__all__ = ["score", "starvation_bound", "static_key"]


def static_key(priority: int, enqueued_at: float, *, alpha: float, beta: float) -> float:
    """k = α·p − β·t_enqueued. Higher is better."""
    return alpha * priority - beta * enqueued_at


def score(priority: int, enqueued_at: float, now: float, *, alpha: float, beta: float) -> float:
    """α·p + β·wait: the number a human reads; orders exactly as `static_key`."""
    return alpha * priority + beta * (now - enqueued_at)


def starvation_bound(levels_apart: int, *, alpha: float, beta: float) -> float:
    """Seconds after which a waiting job outranks every newly arriving job `levels_apart`
    levels above it: α·Δp = β·wait."""
    return alpha / beta * levels_apart
