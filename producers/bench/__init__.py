"""`genq bench`: the fleet against the engine's own limit and the naive Celery baseline."""

from __future__ import annotations

from producers.bench.run import run_bench
from producers.bench.workload import Workload

__all__ = ["Workload", "run_bench"]
