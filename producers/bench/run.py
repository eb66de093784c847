"""Running the bench: engine limit and fleet alternately (A B A B ...: the machine is shared
and noisy, so each ratio compares neighbours), then the naive baseline, light-load latency,
submission rates and worker memory. Every figure is a median over the repeats."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from producers.bench.contenders import EngineLimit, Fleet, NaiveCelery
from producers.bench.submission import measure_submission
from producers.bench.workload import Workload, percentile
from producers.queues import purge_model

__all__ = ["run_bench"]

_LIGHT_LOAD_JOBS = 30
_LIGHT_LOAD_WARMUP = 10
_LIGHT_LOAD_MIN_ROUNDS = 6
_LIGHT_LOAD_IDLE = 0.05  # seconds between one result and the next request
_LIGHT_LOAD_SETTLE = 1.5  # quiet before a block: vLLM's idle busy-wait (1 s) has ended
_MEMORY_QUEUE_DEPTH = 10_000
_MEMORY_BATCH = 1_000
_MEMORY_SETTLE_SECONDS = 5.0


def run_bench(workload: Workload, *, json_path: Path | None, say: Any = print) -> dict[str, Any]:
    workload = workload.with_prompts()
    env = {**os.environ}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    logs = Path(tempfile.mkdtemp(prefix="genq-bench-"))
    say(f"workload: {workload.describe()}  (logs in {logs})")
    results: dict[str, Any] = {"workload": workload.describe(), "pairs": []}

    # Every process the bench starts is stopped however it ends (an error, Ctrl-C, or the
    # SIGTERM `genq bench` turns into SystemExit): the engine-limit process, the worker and
    # the naive worker each hold an engine and the cores with it.
    with ExitStack() as stack:
        engine = EngineLimit(workload, env, logs)
        stop_engine = stack.callback(engine.stop)
        results["dtype"] = engine.dtype
        fleet = Fleet(workload, env, logs)
        stack.callback(fleet.stop)
        for r in range(workload.repeat):
            a = engine.run(workload)
            b = fleet.run(workload)
            pair = {
                "engine": a,
                "fleet": b,
                "fleet_over_engine": b["tokens_per_s"] / a["tokens_per_s"],
            }
            results["pairs"].append(pair)
            say(
                f"pair {r + 1}/{workload.repeat}: engine {a['tokens_per_s']:.0f} tok/s, "
                f"fleet {b['tokens_per_s']:.0f} tok/s, ratio {pair['fleet_over_engine']:.3f}, "
                f"occupancy {b['occupancy']:.2f}"
            )
        results["light_load"] = _light_load(engine, fleet, workload)
        say(f"light load: {results['light_load']}")
        engine_host_rss = engine.rss_mb()
        stop_engine()  # its cores are the worker's for the memory step
        results["memory"] = _memory_with_deep_queue(fleet, workload)
        results["memory"]["engine_host_rss_mb"] = engine_host_rss
        results["memory"]["worker_rss_outside_engine_mb"] = (
            results["memory"]["worker_rss_loaded_mb"] - engine_host_rss
        )
        say(f"memory: {results['memory']}")

    with ExitStack() as stack:
        naive = NaiveCelery(workload, env, logs)
        stack.callback(naive.stop)
        results["naive"] = naive.run(workload)
        say(
            f"naive Celery: {results['naive']['tokens_per_s']:.0f} tok/s "
            f"on {results['naive']['requests']} requests"
        )

    results["submission"] = measure_submission(
        5_000 if workload.repeat > 1 else 2_000, repeat=workload.repeat
    )
    say(f"submission: {results['submission']}")
    summary = _summarize(results)
    results.update(summary)
    say(_table(results))
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))
        say(f"wrote {json_path}")
    return results


def _light_load(engine: EngineLimit, fleet: Fleet, workload: Workload) -> dict[str, Any]:
    """One job at a time, `max_tokens=1`: what genq adds to the engine's own latency.

    Each request, to either, comes `_LIGHT_LOAD_IDLE` after the last one ended, as a lone
    job does (back to back, the engine-limit process's next request would find its engine
    busy-waiting on its last: an engine answers a request sooner right after another).
    Both engines are loaded at once and vLLM's model process busy-waits (sched_yield) for
    1 s after its last step, on the same core as the other's: requests alternating one by
    one between the two took 0.4-0.8 s instead of ~50 ms on a 2-core host. So the two take
    turns in blocks of the same prompts, each block after `_LIGHT_LOAD_SETTLE` of quiet
    (the other's engine asleep), A B A B.

    A 1-token request's time is mostly its prompt's prefill, so it follows the prompt's
    length (35 to 120 ms for 8 to 48 words on an AVX2 host), and a block's p50 moves by
    several ms from one block to the next. What genq adds is therefore taken prompt by
    prompt: the median, over every prompt of every round, of the fleet's time minus the
    engine's for the same prompt in the same round. The p50s of each are reported beside it."""
    prompts = list(workload.prompts[:_LIGHT_LOAD_JOBS])
    # The first single requests after the throughput runs are slower, in either.
    engine.latencies(prompts[:_LIGHT_LOAD_WARMUP], idle=_LIGHT_LOAD_IDLE)
    fleet.latencies(prompts[:_LIGHT_LOAD_WARMUP], idle=_LIGHT_LOAD_IDLE)
    rounds, added, engine_all, fleet_all = [], [], [], []
    for _ in range(max(workload.repeat, _LIGHT_LOAD_MIN_ROUNDS)):
        time.sleep(_LIGHT_LOAD_SETTLE)
        e = [s * 1000 for s in engine.latencies(prompts, idle=_LIGHT_LOAD_IDLE)]
        time.sleep(_LIGHT_LOAD_SETTLE)
        f = [s * 1000 for s in fleet.latencies(prompts, idle=_LIGHT_LOAD_IDLE)]
        pairs = [b - a for a, b in zip(e, f, strict=True)]
        rounds.append(
            {
                "engine_p50_ms": percentile(e, 50),
                "fleet_p50_ms": percentile(f, 50),
                "added_p50_ms": percentile(pairs, 50),
            }
        )
        added += pairs
        engine_all += e
        fleet_all += f
    return {
        "engine_p50_ms": percentile(engine_all, 50),
        "fleet_p50_ms": percentile(fleet_all, 50),
        "added_p50_ms": percentile(added, 50),
        "rounds": rounds,
        "requests_each": len(added),
        "idle_s": _LIGHT_LOAD_IDLE,
        "settle_s": _LIGHT_LOAD_SETTLE,
    }


def _memory_with_deep_queue(fleet: Fleet, workload: Workload) -> dict[str, float]:
    """Worker RSS (its own process, not the engine's) with many jobs queued behind it."""
    idle_rss = fleet.worker_rss_mb()
    prompts = [workload.prompts[i % len(workload.prompts)] for i in range(_MEMORY_QUEUE_DEPTH)]
    requests = [
        {
            "model": fleet.model,
            "prompt": p,
            "max_tokens": workload.max_tokens,
            "ignore_eos": True,
            "priority": i % 10,
            "cache": False,
        }
        for i, p in enumerate(prompts)
    ]
    # In batches, as a producer feeding a deep queue does: with the engine taking both cores
    # RabbitMQ once confirmed nothing of one 10,000-job batch for 10 s.
    ids: list[str] = []
    for start in range(0, len(requests), _MEMORY_BATCH):
        ids += fleet.client.submit_many(requests[start : start + _MEMORY_BATCH])
    time.sleep(_MEMORY_SETTLE_SECONDS)  # the worker fills its batch and its window
    loaded_rss = fleet.worker_rss_mb()
    held = int(fleet.stats().get("held", 0))
    for job_id in ids:  # queued ones never run, running ones are aborted
        fleet.client.cancel(job_id)
    purge_model(fleet.client.settings, fleet.model)
    return {
        "queued": _MEMORY_QUEUE_DEPTH,
        "worker_rss_idle_mb": idle_rss,
        "worker_rss_loaded_mb": loaded_rss,
        "held_window": held,
    }


def _summarize(results: dict[str, Any]) -> dict[str, Any]:
    pairs = results["pairs"]
    engine = statistics.median(p["engine"]["tokens_per_s"] for p in pairs)
    fleet = statistics.median(p["fleet"]["tokens_per_s"] for p in pairs)
    naive = results["naive"]["tokens_per_s"]

    def med(key: str, contender: str = "fleet") -> float:
        values: list[float] = [p[contender][key] for p in pairs]
        return statistics.median(values)

    return {
        "engine_tokens_per_s": engine,
        "fleet_tokens_per_s": fleet,
        "naive_tokens_per_s": naive,
        "fleet_over_engine": statistics.median(p["fleet_over_engine"] for p in pairs),
        "fleet_over_naive": fleet / naive,
        "occupancy": med("occupancy"),
        "prefix_hit_rate": med("prefix_hit_rate"),
        "queue_to_start_p50_s": med("queue_to_start_p50"),
        "queue_to_start_p99_s": med("queue_to_start_p99"),
        "submit_to_result_p50_s": med("submit_to_result_p50"),
        "submit_to_result_p99_s": med("submit_to_result_p99"),
        "worker_cpu_ms_per_job": med("worker_cpu_ms_per_job"),
        "engine_frontend_cpu_ms_per_job": med("frontend_cpu_ms_per_job", "engine"),
        # Per pair, then the median: the two ran back to back on the same machine state.
        "worker_cpu_outside_engine_ms_per_job": statistics.median(
            p["fleet"]["worker_cpu_ms_per_job"] - p["engine"]["frontend_cpu_ms_per_job"]
            for p in pairs
        ),
    }


def _table(r: dict[str, Any]) -> str:
    rows = [
        ("model dtype (engine, fleet and naive alike)", r["dtype"]),
        ("engine limit (vLLM LLM.generate)", f"{r['engine_tokens_per_s']:.0f} tok/s"),
        ("genq fleet (1 worker)", f"{r['fleet_tokens_per_s']:.0f} tok/s"),
        ("naive Celery baseline (solo, batch 1)", f"{r['naive_tokens_per_s']:.0f} tok/s"),
        ("fleet / engine (median of pairs)", f"{r['fleet_over_engine']:.3f}"),
        ("fleet / naive", f"{r['fleet_over_naive']:.1f}x"),
        ("batch occupancy", f"{r['occupancy']:.2f}"),
        (
            "queue-to-start p50 / p99",
            f"{r['queue_to_start_p50_s']:.2f} / {r['queue_to_start_p99_s']:.2f} s",
        ),
        (
            "submit-to-result p50 / p99",
            f"{r['submit_to_result_p50_s']:.2f} / {r['submit_to_result_p99_s']:.2f} s",
        ),
        ("light load added p50", f"{r['light_load']['added_p50_ms']:.1f} ms"),
        ("submit_many", f"{r['submission']['submit_jobs_per_s']:.0f} jobs/s"),
        ("status reads", f"{r['submission']['status_reads_per_s']:.0f} reads/s"),
        ("worker RSS with 10k queued", f"{r['memory']['worker_rss_loaded_mb']:.0f} MB"),
        ("  of which vLLM's frontend (LLM process)", f"{r['memory']['engine_host_rss_mb']:.0f} MB"),
        ("  outside the engine", f"{r['memory']['worker_rss_outside_engine_mb']:.0f} MB"),
        ("worker CPU per job", f"{r['worker_cpu_ms_per_job']:.2f} ms"),
        (
            "  of which vLLM's frontend (LLM process)",
            f"{r['engine_frontend_cpu_ms_per_job']:.2f} ms",
        ),
        ("  outside the engine", f"{r['worker_cpu_outside_engine_ms_per_job']:.2f} ms"),
        ("prefix cache hit rate", f"{r['prefix_hit_rate']:.2%}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{width}} | {v} |" for k, v in rows)
