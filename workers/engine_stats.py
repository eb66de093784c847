"""What the engine reports each step: how full the batch is and how often the prefix cache
hits. Fed by a vLLM stat logger (vLLM calls `record` once per engine step on the engine's
event loop); read by the worker's heartbeat and by `genq bench`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase

__all__ = ["EngineCounters", "counting_logger"]


@dataclass
class EngineCounters:
    steps: int = 0
    """Engine steps that had at least one running request."""
    running_sum: int = 0
    """Sum over those steps of the requests running: running_sum / steps is the mean batch."""
    waiting: int = 0
    prefix_queries: int = 0
    """Prompt tokens looked up in the prefix cache."""
    prefix_hits: int = 0
    """... and found there."""

    def snapshot(self) -> dict[str, int]:
        return {"engine_steps": self.steps, "engine_running_sum": self.running_sum,
                "engine_waiting": self.waiting, "prefix_queries": self.prefix_queries,
                "prefix_hits": self.prefix_hits}


def counting_logger(counters: EngineCounters) -> type[StatLoggerBase]:
    """A stat-logger class (vLLM wants a factory) that adds into `counters`."""

    class _Counting(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any,
                   mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
            if scheduler_stats is None:
                return
            running = scheduler_stats.num_running_reqs
            if running:
                counters.steps += 1
                counters.running_sum += running
            counters.waiting = scheduler_stats.num_waiting_reqs
            prefix = scheduler_stats.prefix_cache_stats
            counters.prefix_queries += prefix.queries
            counters.prefix_hits += prefix.hits

        def log_engine_initialized(self) -> None:
            pass

    return _Counting
