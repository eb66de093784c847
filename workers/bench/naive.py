"""THE NAIVE BASELINE (benchmark only): how most Celery + vLLM code runs.

A plain Celery worker with `--pool solo`; each task calls `llm.generate([prompt])` once, so
the engine runs at batch size one. genq's worker exists because this leaves most of the
engine idle; `genq bench` measures by how much.

    GENQ_NAIVE_MODEL=DIR python -m celery -A workers.bench.naive worker --pool solo -Q QUEUE
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

app = Celery(
    "genq-naive",
    broker=os.environ.get("GENQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    backend=os.environ.get("GENQ_REDIS_URL", "redis://127.0.0.1:6379/0"),
)
app.conf.update(worker_prefetch_multiplier=1, task_acks_late=True, result_expires=3600)

_llm: Any = None


@signals.worker_init.connect  # type: ignore[untyped-decorator]
def _load_engine(**_kwargs: Any) -> None:
    # worker_init, not worker_process_init: the latter never fires in the solo pool.
    global _llm
    from vllm import LLM

    from workers.cpu_dtype import engine_dtype

    _llm = LLM(
        model=os.environ["GENQ_NAIVE_MODEL"],
        enforce_eager=True,
        seed=0,
        dtype=engine_dtype("auto"),  # type: ignore[arg-type]  # as a genq worker picks it
        max_model_len=int(os.environ.get("GENQ_NAIVE_MAX_MODEL_LEN", "1024")),
    )


@app.task(name="naive.generate")  # type: ignore[untyped-decorator]
def generate(prompt: str, params: dict[str, Any]) -> int:
    from vllm import SamplingParams

    output = _llm.generate([prompt], SamplingParams(**params), use_tqdm=False)[0]
    return len(output.outputs[0].token_ids)
