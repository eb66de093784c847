"""`genq demo`: a whole local fleet in one command.

Starts a worker on the tiny test model and Flower, submits ~100 prompts of mixed
priorities through the normal client, shows a progress bar, prints a few results and the
wait per priority level, says where Flower is, then stops what it started."""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from genq.local import FlowerProcess, WorkerProcess
from genq.schema import JobRecord
from producers.client import Client

__all__ = ["run_demo"]

PROMPTS = [
    "The queue",
    "Once upon a time",
    "def fibonacci(n):",
    "import asyncio",
    "Dear reader,",
    "class Worker:",
    "The scheduler picks",
    "Redis keeps",
    "# TODO",
    "for line in",
]


def run_demo(
    *, model_path: Path, jobs: int = 100, flower_port: int = 5555, model_name: str = "demo-tiny"
) -> None:
    env = {**os.environ, "GENQ_MODELS": model_name}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    logs = Path(tempfile.mkdtemp(prefix="genq-demo-"))
    print(f"starting a worker on {model_path} (logs in {logs}) and Flower on :{flower_port} ...")
    worker = WorkerProcess(
        model_path=model_path, model_name=model_name, env=env, log_dir=logs, max_num_seqs=32
    )
    flower = FlowerProcess(env=env, port=flower_port, log_dir=logs)
    try:
        flower.start()
        worker.start()
        print(f"worker {worker.hostname} is ready; Flower: http://127.0.0.1:{flower_port}/")
        with Client(models=[model_name]) as client:
            records = _submit_and_wait(client, model_name, jobs)
        _report(records)
        print(
            f"\nFlower showed these jobs at http://127.0.0.1:{flower_port}/tasks "
            "(stopping it now; run `genq flower` to keep one up)."
        )
    finally:
        worker.stop()
        flower.stop()


def _submit_and_wait(client: Client, model: str, jobs: int) -> list[JobRecord]:
    rng = random.Random(0)
    requests = [
        {
            "model": model,
            "prompt": rng.choice(PROMPTS),
            "priority": rng.randrange(10),
            "max_tokens": rng.randint(16, 64),
            "temperature": 0.8,
        }
        for _ in range(jobs)
    ]
    ids = client.submit_many(requests)
    print(f"submitted {len(ids)} jobs across priority levels 0..9")
    with tqdm(total=len(ids), unit="job", file=sys.stdout) as bar:
        return client.wait_many(ids, timeout=600, on_done=lambda _r: bar.update(1))


def _report(records: list[JobRecord]) -> None:
    print("\na few results:")
    for record in records[:3]:
        text = (record.text or "").replace("\n", " ")[:60]
        print(f"  {record.id[:8]} p{record.priority} {record.state.value}: {text!r}")
    print("\n(the test model has random weights: its text is noise, its token counts are real)")
    waits: dict[int, list[float]] = defaultdict(list)
    for record in records:
        waits[record.priority].append(record.wait_seconds())
    print("\nqueue wait by priority level (higher level = more urgent):")
    print("  level  jobs  median_s  max_s")
    for level in sorted(waits, reverse=True):
        w = waits[level]
        print(f"  {level:>5}  {len(w):>4}  {statistics.median(w):>8.3f}  {max(w):>5.3f}")
    states: dict[str, int] = defaultdict(int)
    for record in records:
        states[record.state.value] += 1
    print("\nstates:", dict(states))
