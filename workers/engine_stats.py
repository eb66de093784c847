"""What the engine reports each step: how full the batch is and how often the prefix cache
hits. Fed by a vLLM stat logger (vLLM calls `record` once per engine step on the engine's
event loop); read by the worker's heartbeat and by `genq bench`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllm.v1.metrics.loggers import PrometheusStatLogger

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


def counting_logger(counters: EngineCounters) -> type[PrometheusStatLogger]:
    """A stat-logger class (vLLM wants a factory) that adds into `counters`.

    It poses as vLLM's Prometheus logger because vLLM adds its own unless given one: nothing
    scrapes a worker's process (the fleet's metrics are the gateway's), and filling those
    histograms every step cost more of the worker's CPU than genq's own bookkeeping."""

    class _Counting(PrometheusStatLogger):
        def __init__(self, vllm_config: Any, engine_indexes: Any = None) -> None:
            pass  # no Prometheus metrics are created

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

        def log(self) -> None:
            pass

        def record_sleep_state(self, sleep: int = 0, level: int = 0) -> None:
            pass

        def record_admission_rejection(self, reason: str) -> None:
            pass

    return _Counting
