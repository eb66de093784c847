"""Fleet-wide tenant fairness with real RabbitMQ, Redis and vLLM: under the fair policy a
tenant that floods a level does not make another tenant's jobs of that level wait for the
whole flood (scheduler/turns.py, genq/demand.py)."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import redis

from genq.demand import DemandCounter
from genq.settings import ClientSettings
from producers import Client
from producers.queues import purge_model

QUANTUM = 64.0  # tokens: a flood of 9-token jobs leaves the top turn after 7 of them
FAIR_ENV = {"GENQ_POLICY": "fair"}


def test_demand_is_charged_in_order_and_decays() -> None:
    r = redis.Redis.from_url(ClientSettings().redis_url)
    model = f"demand-{uuid.uuid4().hex[:6]}"
    counter = DemandCounter(r, horizon=10.0)
    try:
        now = time.time()
        assert counter.charge(model, [("a", 5), ("b", 7), ("a", 3)], now) == [0, 0, 5]
        later = counter.charge(model, [("a", 1), ("b", 1)], now + 10)
        assert math.isclose(later[0], 8 / math.e, rel_tol=1e-9)
        assert math.isclose(later[1], 7 / math.e, rel_tol=1e-9)
        assert counter.charge(f"{model}-other", [("a", 1)], now) == [0]
    finally:
        r.delete(f"genq:demand:{model}", f"genq:demand:{model}-other")
        r.close()


def test_a_flooding_tenant_does_not_hold_back_another_tenants_jobs(make_worker: Any) -> None:
    model = f"fair-{uuid.uuid4().hex[:6]}"
    client = Client(models=[model], policy="fair", fair_quantum=QUANTUM)
    try:
        # Queued while no worker serves the model: tenant a's flood first, then tenant b.
        flood = client.submit_many(
            [
                {
                    "model": model,
                    "prompt": f"a {i}",
                    "priority": 5,
                    "max_tokens": 8,
                    "ignore_eos": True,
                    "tenant": "a",
                }
                for i in range(120)
            ]
        )
        light = client.submit_many(
            [
                {
                    "model": model,
                    "prompt": f"b {i}",
                    "priority": 5,
                    "max_tokens": 8,
                    "ignore_eos": True,
                    "tenant": "b",
                }
                for i in range(6)
            ]
        )
        worker = make_worker(model_name=model, max_num_seqs=2, env=FAIR_ENV, name="fair")
        records = client.wait_many([*flood, *light], timeout=300)
        worker.stop()
    finally:
        purge_model(client.settings, model, delete=True)
        client.close()
    by_id = {r.id: r for r in records}
    flood_starts = sorted(by_id[i].started_at or 0.0 for i in flood)
    light_starts = [by_id[i].started_at or 0.0 for i in light]
    print(
        "tenant b's jobs started after",
        [sum(1 for s in flood_starts if s < t) for t in light_starts],
        "of tenant a's 120",
    )
    # In one FIFO queue they would start after all 120. With turns they queue behind the
    # flood's first few (those charged under a quantum), and the worker's counters put them
    # before the flood's jobs it holds.
    assert max(light_starts) < flood_starts[30]
