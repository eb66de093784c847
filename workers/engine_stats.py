"""What the engine does each step, counted cheaply: how full the batch is and how often the
prefix cache hits. Read by the worker's heartbeat and by `genq bench`.

vLLM can report both through a stat logger, but any stat logger turns its per-step
statistics on (`log_stats`), and building those in the worker's process for every request
at every step cost more of the worker's CPU than all of genq's own bookkeeping (a quarter of
the worker's CPU per job, by py-spy). So the engine runs with them off, and the worker counts
for itself: each engine step's outputs as they arrive (one call per step, not per request),
and each finished request's prefix-cache hits (`RequestOutput.num_cached_tokens`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["EngineCounters", "count_steps"]

log = logging.getLogger(__name__)


@dataclass
class EngineCounters:
    steps: int = 0
    """Engine steps that produced output for at least one request."""
    running_sum: int = 0
    """Sum over those steps of the requests that produced output in them: running_sum /
    steps is the mean batch."""
    waiting: int = 0
    """Requests in the engine that produced nothing in the latest step (queued in it)."""
    prefix_queries: int = 0
    """Prompt tokens of finished requests, all looked up in the prefix cache."""
    prefix_hits: int = 0
    """... and those found there."""

    def finished(self, prompt_tokens: int, cached_tokens: int | None) -> None:
        self.prefix_queries += prompt_tokens
        self.prefix_hits += cached_tokens or 0

    def snapshot(self) -> dict[str, int]:
        return {
            "engine_steps": self.steps,
            "engine_running_sum": self.running_sum,
            "engine_waiting": self.waiting,
            "prefix_queries": self.prefix_queries,
            "prefix_hits": self.prefix_hits,
        }


def count_steps(llm: Any, counters: EngineCounters) -> None:
    """Count each step's outputs as `llm` (vLLM's AsyncLLM) pulls them from its engine core.

    AsyncLLM's output loop awaits `engine_core.get_output_async()` once per step: wrapped
    here, on the instance. Should a vLLM release rename it, jobs still run; only these
    counters stay at zero (logged once)."""
    core: Any = getattr(llm, "engine_core", None)
    pull: Callable[[], Awaitable[Any]] | None = getattr(core, "get_output_async", None)
    unfinished: Callable[[], int] | None = getattr(
        getattr(llm, "output_processor", None), "get_num_unfinished_requests", None
    )
    if pull is None or unfinished is None:
        log.warning("this vLLM has no engine_core.get_output_async: batch occupancy is not counted")
        return

    async def counted() -> Any:
        outputs = await pull()
        produced = len(getattr(outputs, "outputs", ()) or ())
        if produced:
            counters.steps += 1
            counters.running_sum += produced
            counters.waiting = max(0, unfinished() - produced)
        return outputs

    core.get_output_async = counted
