"""Producer-side figures: submit rate with publisher confirms, status read rate, and the
worker's memory with a deep queue (it must hold a bounded window, never the queue)."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from producers.client import Client
from producers.queues import purge_model

__all__ = ["measure_submission"]


def measure_submission(jobs: int, *, repeat: int = 1, levels: int = 10) -> dict[str, Any]:
    """submit_many of `jobs` to a declared model no worker serves, then status_many; each
    `repeat` times, a fresh model each time. Rates are medians, every run's beside them."""
    runs = [_once(jobs, levels) for _ in range(repeat)]
    submit = [r[0] for r in runs]
    status = [r[1] for r in runs]
    return {
        "jobs": jobs,
        "submit_jobs_per_s": statistics.median(submit),
        "status_reads_per_s": statistics.median(status),
        "submit_runs": submit,
        "status_runs": status,
    }


def _once(jobs: int, levels: int) -> tuple[float, float]:
    model = f"submit-{uuid.uuid4().hex[:6]}"
    with Client(models=[model]) as client:
        requests = [
            {"model": model, "prompt": f"p{i}", "priority": i % levels, "max_tokens": 8}
            for i in range(jobs)
        ]
        start = time.perf_counter()
        ids = client.submit_many(requests)
        submit_s = time.perf_counter() - start
        start = time.perf_counter()
        client.status_many(ids)
        status_s = time.perf_counter() - start
        purge_model(client.settings, model, delete=True)
        client.store.delete(ids)
    return jobs / submit_s, jobs / status_s
