"""The surge (scheduler/surge.py): an engine with far more room than its windows hold takes a
burst through a second consumer per level queue, and is back to its window once full."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import redis

from genq import names
from genq.local import wait_for
from genq.schema import JobState
from genq.settings import ClientSettings
from genq.tls import pika_parameters
from producers import Client


def _consumers(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika_parameters(url, ClientSettings()))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.consumer_count
    finally:
        conn.close()


def test_an_empty_engine_surges_and_a_full_one_holds_only_its_window(make_worker: Any) -> None:
    model = f"surge-{uuid.uuid4().hex[:6]}"
    # One level, window 2: 16 free slots are 8 times what the window holds.
    env = {"GENQ_LEVELS": "1", "GENQ_WINDOW": "2"}
    worker = make_worker(model_name=model, max_num_seqs=16, env=env, name="surge")
    client = Client(models=[model], levels=1)
    stats = redis.Redis.from_url(client.settings.redis_url, decode_responses=True)
    queue = names.level_queue(model, 0)
    try:
        ids = client.submit_many(
            [
                {"model": model, "prompt": f"job {i}", "max_tokens": 48, "ignore_eos": True}
                for i in range(240)
            ]
        )
        # The first jobs found the engine empty: a surge started (its consumer is the
        # second one on the queue), and once the engine was full it was cancelled.
        wait_for(
            lambda: int(stats.hget(names.worker_stats_key(worker.hostname), "surges") or 0) >= 1,
            timeout=120,
            what="a surge",
        )
        wait_for(
            lambda: _consumers(client.settings.broker_url, queue) == 1,
            timeout=120,
            what="the surge consumer cancelled while the engine is full",
            interval=0.05,
        )
        held = int(stats.hget(names.worker_stats_key(worker.hostname), "held") or 0)
        assert held <= 16 + 2  # never more than the engine's room plus the window
        records = client.wait_many(ids, timeout=600)
        assert all(r.state is JobState.SUCCEEDED and r.attempts == 1 for r in records)
        assert all(r.usage and r.usage.completion_tokens == 48 for r in records)
        # Idle again, the engine all room: ready for the next burst with a surge consumer.
        wait_for(
            lambda: _consumers(client.settings.broker_url, queue) == 2,
            timeout=60,
            what="a surge consumer on an idle worker",
        )
    finally:
        stats.close()
        client.close()
