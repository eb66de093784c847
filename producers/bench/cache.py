"""`genq bench --cache`: a workload with repeats, run twice through the fleet: with the
result cache (deterministic requests, temperature 0) and without it (cache: false)."""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from producers.bench.contenders import Fleet
from producers.bench.workload import Workload

__all__ = ["run_cache_bench"]

# A share of the requests repeat an earlier prompt exactly, as retries and popular prompts do.
_REPEAT_SHARE = 0.5


def run_cache_bench(workload: Workload, *, say: Any = print) -> dict[str, Any]:
    workload = workload.with_prompts()
    env = {**os.environ}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    rng = random.Random(workload.seed)
    distinct = list(workload.prompts[: max(1, int(workload.requests * (1 - _REPEAT_SHARE)))])
    prompts = distinct + [rng.choice(distinct) for _ in range(workload.requests - len(distinct))]
    rng.shuffle(prompts)
    fleet = Fleet(workload, env, Path(tempfile.mkdtemp(prefix="genq-bench-cache-")))
    results: dict[str, Any] = {"requests": len(prompts), "distinct": len(distinct)}
    try:
        for label, cache in (("uncached", False), ("cached", True)):
            before = fleet.client.cache_stats()
            start = time.time()
            ids = fleet.client.submit_many(
                [
                    {
                        "model": fleet.model,
                        "prompt": p,
                        "max_tokens": workload.max_tokens,
                        "temperature": 0.0,
                        "ignore_eos": True,
                        "cache": cache,
                    }
                    for p in prompts
                ]
            )
            records = fleet.client.wait_many(ids, timeout=3600)
            seconds = max(r.finished_at or 0.0 for r in records) - start
            after = fleet.client.cache_stats()
            hits = (after.hits - before.hits) + (after.followers - before.followers)
            lookups = after.lookups - before.lookups
            results[label] = {
                "seconds": seconds,
                "jobs_per_s": len(ids) / seconds,
                "cached_records": sum(r.cached for r in records),
                "hit_rate": hits / lookups if lookups else 0.0,
            }
            say(f"{label}: {results[label]}")
    finally:
        fleet.stop()
    results["speedup"] = results["uncached"]["seconds"] / results["cached"]["seconds"]
    say(
        f"result cache: hit rate {results['cached']['hit_rate']:.1%} on "
        f"{len(prompts)} requests ({len(distinct)} distinct), "
        f"{results['speedup']:.2f}x faster than without it"
    )
    return results
