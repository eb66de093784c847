"""The three contenders of `genq bench`, each a real process: the engine alone, the genq
fleet (one `genq worker`), and the naive Celery baseline."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, cast

import redis
from celery import Celery

from genq import names
from genq.local import WorkerProcess, wait_for
from producers.bench.workload import Workload, percentile
from producers.client import Client
from producers.queues import purge_model

__all__ = ["EngineLimit", "Fleet", "NaiveCelery"]


class EngineLimit:
    """vLLM's offline LLM.generate in a subprocess, kept loaded across repeats."""

    def __init__(self, workload: Workload, env: dict[str, str], log_dir: Path) -> None:
        self._log = (log_dir / "engine-limit.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.bench.engine_limit",
                "--model",
                str(workload.model_path),
                "--max-num-seqs",
                str(workload.max_num_seqs),
                "--max-model-len",
                str(workload.max_model_len),
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        # The model's dtype as vLLM runs it: the worker and the naive baseline pick the same.
        self.dtype: str = self._read()["dtype"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"engine-limit process died (log: {self._log.name})")
        return dict(json.loads(line))

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, workload: Workload) -> dict[str, float]:
        reply = self._ask(
            {"op": "batch", "prompts": list(workload.prompts), "params": workload.sampling()}
        )
        return {
            "tokens": reply["tokens"],
            "seconds": reply["seconds"],
            "tokens_per_s": reply["tokens"] / reply["seconds"],
            "frontend_cpu_ms_per_job": reply["cpu_seconds"] / len(workload.prompts) * 1000,
        }

    def rss_mb(self) -> float:
        """The process hosting vLLM's frontend (LLM), engine core processes aside: what a
        worker's process weighs before genq adds anything."""
        return _rss_mb(self.proc.pid)

    def latencies(self, prompts: list[str], *, idle: float) -> list[float]:
        """One request at a time, each after `idle` seconds of the engine doing nothing."""
        reply = self._ask(
            {
                "op": "latency",
                "prompts": prompts,
                "idle": idle,
                "params": {"max_tokens": 1, "temperature": 0.0},
            }
        )
        return list(reply["latencies"])

    def stop(self) -> None:
        """Between commands it exits once its stdin closes; busy (the bench interrupted
        mid-run), it is stopped with its engine processes. Safe to call twice."""
        if self._log.closed:
            return
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # it is already gone
                self.proc.stdin.close()
        _stop_group(self.proc, patience=_STOP_PATIENCE_SECONDS)
        self._log.close()


# How long a contender gets to stop by itself before its process group is signalled.
_STOP_PATIENCE_SECONDS = 20.0


def _stop_group(proc: subprocess.Popen[Any], *, patience: float) -> None:
    """Wait for `proc` (a session leader) to end; past `patience` SIGTERM its whole group,
    then SIGKILL; and SIGKILL whatever of the group is left (engine core processes)."""
    try:
        proc.wait(patience)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing left in it
        os.killpg(pgid, sig)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Fleet:
    """One `genq worker` serving the workload's model, fed through `Client.submit_many`."""

    def __init__(self, workload: Workload, env: dict[str, str], log_dir: Path) -> None:
        self.model = f"bench-{uuid.uuid4().hex[:6]}"
        self.env = {**env, "GENQ_MODELS": self.model}
        self.worker = WorkerProcess(
            model_path=workload.model_path,
            model_name=self.model,
            env=self.env,
            log_dir=log_dir,
            max_num_seqs=workload.max_num_seqs,
            max_model_len=workload.max_model_len,
            name="bench",
        )
        try:
            self.worker.start()
            # Patient: the bench loads the machine far past what a producer's default
            # expects of a broker sharing two cores with a busy engine.
            self.client = Client(models=[self.model], publish_timeout=60)
            self.redis = redis.Redis.from_url(self.client.settings.redis_url, decode_responses=True)
            self.pid = int(self.stats()["pid"])
            self.run(workload, limit=8)  # warm-up
        except BaseException:  # nobody else holds the worker yet to stop it
            self.worker.stop()
            raise

    def stats(self) -> dict[str, str]:
        # A client with decode_responses: the hash's fields and values are str.
        raw = self.redis.hgetall(names.worker_stats_key(self.worker.hostname))
        return cast("dict[str, str]", raw)

    def _settled_stats(self) -> dict[str, str]:
        # The heartbeat is once a second: wait for one taken after the last job ended.
        after = time.time()
        stats: dict[str, str] = wait_for(
            lambda: (s := self.stats()) and float(s["at"]) > after and s,
            timeout=10,
            what="a fresh worker heartbeat",
        )
        return stats

    def run(self, workload: Workload, *, limit: int | None = None) -> dict[str, float]:
        prompts = workload.prompts[:limit] if limit else workload.prompts
        before = self._settled_stats() if limit is None else {}
        cpu0 = _cpu_seconds(self.pid)
        requests = [
            {"model": self.model, "prompt": p, **workload.sampling(), "cache": False}
            for p in prompts
        ]
        start = time.time()
        ids = self.client.submit_many(requests)
        submitted = time.time()
        records = self.client.wait_many(ids, timeout=3600)
        cpu = _cpu_seconds(self.pid) - cpu0
        end = max(r.finished_at or 0.0 for r in records)
        tokens = sum(r.usage.completion_tokens for r in records if r.usage)
        result = {
            "tokens": tokens,
            "seconds": end - start,
            "tokens_per_s": tokens / (end - start),
            "submit_seconds": submitted - start,
            "failed": sum(1 for r in records if r.state.value != "succeeded"),
            "queue_to_start_p50": percentile([r.wait_seconds() for r in records], 50),
            "queue_to_start_p99": percentile([r.wait_seconds() for r in records], 99),
            "submit_to_result_p50": percentile(
                [(r.finished_at or 0) - r.enqueued_at for r in records], 50
            ),
            "submit_to_result_p99": percentile(
                [(r.finished_at or 0) - r.enqueued_at for r in records], 99
            ),
            "worker_cpu_ms_per_job": cpu / len(records) * 1000,
        }
        if limit is None:
            after = self._settled_stats()
            steps = int(after["engine_steps"]) - int(before["engine_steps"])
            running = int(after["engine_running_sum"]) - int(before["engine_running_sum"])
            result["occupancy"] = running / steps / workload.max_num_seqs if steps else 0.0
            result["prefix_hit_rate"] = _ratio(after, before, "prefix_hits", "prefix_queries")
        return result

    def latencies(self, prompts: list[str], *, idle: float) -> list[float]:
        """Light load: one job at a time, max_tokens=1, submit to stored result; each job
        submitted `idle` seconds after the last one's result was read."""
        out = []
        for prompt in prompts:
            time.sleep(idle)
            job_id = self.client.submit(
                prompt, model=self.model, max_tokens=1, temperature=0.0, cache=False
            )
            record = self.client.result(job_id, timeout=60)
            out.append((record.finished_at or 0.0) - record.enqueued_at)
        return out

    def worker_rss_mb(self) -> float:
        return _rss_mb(self.pid)

    def stop(self) -> None:
        self.worker.stop()
        purge_model(self.client.settings, self.model, delete=True)
        self.client.close()
        self.redis.close()


def _ratio(after: dict[str, str], before: dict[str, str], num: str, den: str) -> float:
    d = int(after[den]) - int(before[den])
    return (int(after[num]) - int(before[num])) / d if d else 0.0


class NaiveCelery:
    """The baseline: plain Celery, `--pool solo`, one `generate([prompt])` per task."""

    def __init__(self, workload: Workload, env: dict[str, str], log_dir: Path) -> None:
        self.queue = f"genq.naive.{uuid.uuid4().hex[:6]}"
        self._log = (log_dir / "naive.log").open("ab")
        worker_env = {
            **env,
            "GENQ_NAIVE_MODEL": str(workload.model_path),
            "GENQ_NAIVE_MAX_MODEL_LEN": str(workload.max_model_len),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.bench.naive",
                "worker",
                "--pool=solo",
                "-Q",
                self.queue,
                "--without-mingle",
                "--without-gossip",
                "-n",
                f"naive-{os.getpid()}@%h",
                "--loglevel=WARNING",
            ],
            env=worker_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.app = Celery(
            broker=env.get("GENQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
            backend=env.get("GENQ_REDIS_URL", "redis://127.0.0.1:6379/0"),
        )
        try:
            self.app.send_task(
                "naive.generate", args=["warm up", {"max_tokens": 4}], queue=self.queue
            ).get(timeout=600)
        except BaseException:  # nobody else holds the process yet to stop it
            self.stop()
            raise

    def run(self, workload: Workload) -> dict[str, float]:
        prompts = workload.prompts[: workload.naive_requests]
        start = time.time()
        results = [
            self.app.send_task("naive.generate", args=[p, workload.sampling()], queue=self.queue)
            for p in prompts
        ]
        tokens = sum(r.get(timeout=3600) for r in results)
        seconds = time.time() - start
        return {
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "requests": len(prompts),
        }

    def stop(self) -> None:
        _signal_group(self.proc.pid, signal.SIGTERM)
        _stop_group(self.proc, patience=60)
        self._log.close()
