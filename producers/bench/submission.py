"""Producer-side figures: submit rate with publisher confirms, status read rate, and the
worker's memory with a deep queue (it must hold a bounded window, never the queue)."""

from __future__ import annotations

import time
import uuid

from producers.client import Client
from producers.queues import purge_model

__all__ = ["measure_submission"]


def measure_submission(jobs: int, *, levels: int = 10) -> dict[str, float]:
    """submit_many of `jobs` to a declared model no worker serves, then status_many."""
    model = f"submit-{uuid.uuid4().hex[:6]}"
    with Client(models=[model]) as client:
        requests = [{"model": model, "prompt": f"p{i}", "priority": i % levels,
                     "max_tokens": 8} for i in range(jobs)]
        start = time.perf_counter()
        ids = client.submit_many(requests)
        submit_s = time.perf_counter() - start
        start = time.perf_counter()
        client.status_many(ids)
        status_s = time.perf_counter() - start
        purge_model(client.settings.broker_url, model, client.settings.levels, delete=True)
        client.store.delete(ids)
    return {"jobs": jobs, "submit_jobs_per_s": jobs / submit_s,
            "status_reads_per_s": jobs / status_s}
