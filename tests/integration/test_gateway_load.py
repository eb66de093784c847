"""The gateway under load, as `genq gateway` runs (its own process), driven by the `openai`
package: a thousand waiting completions and hundreds of streams at once, on a bounded number
of Redis connections; results that land before anyone waits; the 503 when it is full."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import redis.asyncio as aioredis

from genq import names
from genq.local import GatewayProcess, free_port
from genq.settings import ClientSettings, GatewaySettings
from producers import Client
from producers.gateway.waiter import Waiter
from tests.integration.gateway_kit import drop_queues, queued_messages

# The gateway's Redis pool (GENQ_GATEWAY_REDIS_CONNECTIONS) and the bound it implies: the
# pool, the stream reader's own connection, and one per client thread (context.py).
POOL = 8
BOUND = POOL + 3


@pytest.fixture(scope="module")
def load_model(make_worker: Any) -> Iterator[str]:
    """A model of its own, on a worker of its own: 1,300 jobs in a few minutes are this
    module's, not the shared worker's the other modules use."""
    model = f"load-{uuid.uuid4().hex[:8]}"
    worker = make_worker(model_name=model, max_num_seqs=16, name="load")
    yield model
    worker.stop()
    drop_queues(model)


@pytest.fixture(scope="module")
def load_gateway(
    fleet_env: dict[str, str], load_model: str, idle_model: str, log_dir: Path
) -> Iterator[GatewayProcess]:
    env = {
        **fleet_env,
        "GENQ_MODELS": f"{load_model},{idle_model}",
        "GENQ_API_KEYS": "off",
        "GENQ_AUDIT_LOG": "off",
        "GENQ_GATEWAY_REDIS_CONNECTIONS": str(POOL),
    }
    gateway = GatewayProcess(env=env, port=free_port(), log_dir=log_dir).start()
    yield gateway
    gateway.stop()


class ConnectionWatch:
    """Samples CLIENT LIST while a load runs: the most connections the gateway held."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._redis = redis.Redis.from_url(ClientSettings().redis_url, decode_responses=True)
        self._stop = threading.Event()
        self.most = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            held = sum(1 for c in self._redis.client_list() if c.get("name") == self._name)
            self.most = max(self.most, held)
            self.samples += 1

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._redis.close()


def _openai(gateway: GatewayProcess, *, connections: int) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(
        timeout=600,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )
    return openai.AsyncOpenAI(
        base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, http_client=http
    )


async def _most_waiting(gateway: GatewayProcess, until: asyncio.Future[Any]) -> float:
    """The gateway's own count of requests held open, at its highest while `until` runs."""
    most = 0.0
    # A new connection each time: under this load the test's own loop may stall for longer
    # than the server keeps an idle connection open.
    async with httpx.AsyncClient(
        base_url=gateway.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
    ) as http:
        while not until.done():
            text = (await http.get("/metrics")).text
            for line in text.splitlines():
                if line.startswith("genq_gateway_waiting_requests "):
                    most = max(most, float(line.split()[1]))
            await asyncio.sleep(0.1)
    return most


def test_a_thousand_waiting_completions_hold_a_bounded_number_of_connections(
    load_gateway: GatewayProcess, load_model: str
) -> None:
    model_name = load_model
    n = 1000

    async def main() -> tuple[list[Any], float]:
        client = _openai(load_gateway, connections=n + 50)
        calls = asyncio.gather(
            *(
                client.completions.create(
                    model=model_name,
                    prompt=f"{i}: a short one",
                    max_tokens=4,
                    temperature=0.8,
                    extra_body={"ignore_eos": True},
                )
                for i in range(n)
            ),
            return_exceptions=True,
        )
        most = await _most_waiting(load_gateway, calls)
        results = await calls
        await client.close()
        return results, most

    with ConnectionWatch(load_gateway.name) as watch:
        results, most_waiting = asyncio.run(main())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {n} failed, e.g. {failures[0]!r}"
    assert all(
        r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4 for r in results
    )
    assert len({r.id for r in results}) == n
    # They really waited together, and the gateway never held more than its bound.
    assert most_waiting >= n / 2, most_waiting
    assert watch.samples > 10
    assert 2 <= watch.most <= BOUND, watch.most


def test_three_hundred_concurrent_streams_each_complete_and_in_order(
    load_gateway: GatewayProcess, load_model: str
) -> None:
    model_name = load_model
    n = 300

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, str, list[str]]:
        raw = await client.completions.with_raw_response.create(
            model=model_name,
            prompt=f"{i}: once upon a time",
            max_tokens=16,
            temperature=0.8,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        (job_id,) = raw.headers["X-Genq-Job-Ids"].split(",")
        pieces, finals = [], []
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].text:
                pieces.append(chunk.choices[0].text)
            if chunk.choices and chunk.choices[0].finish_reason:
                finals.append(chunk.choices[0].finish_reason)
        return job_id, "".join(pieces), finals

    async def main() -> list[Any]:
        client = _openai(load_gateway, connections=n + 20)
        results = await asyncio.gather(*(one(client, i) for i in range(n)), return_exceptions=True)
        await client.close()
        return results

    with ConnectionWatch(load_gateway.name) as watch:
        results = asyncio.run(main())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} of {n} failed, e.g. {failures[0]!r}"
    with httpx.Client(base_url=load_gateway.url, timeout=30) as http:
        for job_id, text, finals in results:
            record = http.get(f"/v1/jobs/{job_id}").json()
            # Every piece once, in order: the stream adds up to the stored text exactly.
            assert record["state"] == "succeeded" and text == record["text"] != ""
            assert finals == ["length"]
    assert 2 <= watch.most <= BOUND, watch.most


def test_a_full_gateway_answers_503_before_accepting_anything(
    fleet_env: dict[str, str], model_name: str, idle_model: str, log_dir: Path
) -> None:
    env = {
        **fleet_env,
        "GENQ_MODELS": f"{model_name},{idle_model}",
        "GENQ_API_KEYS": "off",
        "GENQ_AUDIT_LOG": "off",
        "GENQ_MAX_WAITING": "2",
    }
    gateway = GatewayProcess(env=env, port=free_port(), log_dir=log_dir).start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            ids = [
                http.post("/v1/jobs", json={"model": idle_model, "prompt": "x"}).json()["id"]
                for _ in range(2)
            ]

            def long_poll(job_id: str) -> None:
                http.get(f"/v1/jobs/{job_id}", params={"wait": 3})

            polls = [threading.Thread(target=long_poll, args=(j,)) for j in ids]
            for poll in polls:
                poll.start()
            time.sleep(1.0)  # both long polls are held (they wait 3 s on queued jobs)
            before = queued_messages(idle_model)
            for body in (
                {"model": idle_model, "prompt": "y"},
                {"model": idle_model, "prompt": "y", "stream": True},
            ):
                refused = http.post("/v1/completions", json=body)
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"] == "2"
                assert "GENQ_MAX_WAITING" in refused.json()["error"]["message"]
            refused = http.get(f"/v1/jobs/{ids[0]}", params={"wait": 1})
            assert refused.status_code == 503 and "Retry-After" in refused.headers
            # Refused before anything was accepted: no job was published.
            assert queued_messages(idle_model) == before
            for poll in polls:
                poll.join(10)
            # Room again once the long polls ended.
            assert http.get(f"/v1/jobs/{ids[0]}", params={"wait": 0.2}).status_code == 200
            for job_id in ids:
                http.delete(f"/v1/jobs/{job_id}")
    finally:
        gateway.stop()


def test_a_result_that_lands_before_or_unannounced_is_still_delivered(
    fleet_env: dict[str, str], idle_model: str
) -> None:
    """A result written before the wait began, and one whose announcement was lost (written
    with no pub/sub message): the first read finds one, the sweep the other."""
    settings = GatewaySettings(models=[idle_model])
    with Client(settings=settings) as client:
        early, late = client.submit_many(
            [{"model": idle_model, "prompt": "a"}, {"model": idle_model, "prompt": "b"}]
        )
    sync = redis.Redis.from_url(settings.redis_url, decode_responses=True)

    def finish(job_id: str) -> None:
        # What a worker's result write leaves in the record, minus its announcement.
        sync.hset(
            names.job_key(job_id),
            mapping={
                "state": "succeeded",
                "text": f"text of {job_id}",
                "finished_at": repr(time.time()),
                "finish_reason": "stop",
            },
        )

    async def main() -> None:
        r = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        waiter = Waiter(r)
        waiter.start()
        try:
            finish(early)
            (record,), done = await waiter.wait([early], timeout=30)
            assert done and record.text == f"text of {early}"
            waiting = asyncio.ensure_future(waiter.wait([late], timeout=30))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            finish(late)
            (record,), done = await asyncio.wait_for(waiting, 25)
            assert done and record.text == f"text of {late}"
            assert waiter.waiting == 0
            with pytest.raises(Exception, match="not found"):
                await waiter.wait([uuid.uuid4().hex], timeout=5)
        finally:
            await waiter.stop()
            await r.aclose()

    try:
        asyncio.run(main())
    finally:
        sync.close()
