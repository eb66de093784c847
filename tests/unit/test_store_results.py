"""The Celery result value is built twice, in Python (results.celery_meta: what the worker
stores for the job it ran, and the client for a cancelled job) and in Lua (flight.lua's
`meta`: what a single-flight follower or a cache hit gets). Both must be the same value.

The contract is the parsed JSON, not the bytes: Celery's Redis result backend decodes the
value with a JSON parser, so key order and escaping are nobody's business, and the two
encoders do escape differently (cjson writes `/` as `\\/` and non-ASCII as UTF-8, Python's
json.dumps the one as is and the other as `\\u` escapes). So the values are compared parsed,
with texts that contain both.

Runs the real scripts on the local Redis (`genq.settings.ClientSettings().redis_url`), under
job IDs of its own; skipped where no Redis answers, except in CI."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from genq import names
from genq.schema import JobSpec, JobState
from genq.settings import ClientSettings
from genq.store import JobStore, celery_meta, new_record_fields
from workers.ledger import Ledger

# Both kinds of character the two JSON encoders escape differently.
AWKWARD = 'a/b ünïcødé ✓ "quoted"\n'


class Flight:
    """A leader and followers under one fresh cache key, and the keys to remove after."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.cache_key = f"test-{uuid.uuid4().hex}"
        self.spec = JobSpec.model_validate(
            {"model": f"results-{uuid.uuid4().hex[:8]}", "prompt": AWKWARD, "temperature": 0.0}
        )
        self.job_ids: list[str] = []

    def submit(self) -> tuple[str, str, str | None]:
        job_id = f"test-{uuid.uuid4().hex}"
        self.job_ids.append(job_id)
        fields = new_record_fields(
            self.spec,
            job_id=job_id,
            tenant="t",
            enqueued_at=time.time(),
            deadline_at=None,
            cache_key=self.cache_key,
            cache_ttl=60,
            cache_max_bytes=100_000,
        )
        (created,) = self.store.create([fields])
        return job_id, created.outcome, created.leader

    def celery_value(self, job_id: str) -> Any:
        raw = self.store.redis.get(names.celery_result_key(job_id))
        assert raw is not None, f"no Celery result for {job_id}"
        return json.loads(raw)

    def cleanup(self) -> None:
        keys = [names.cache_entry_key(self.cache_key), names.flight_key(self.cache_key)]
        for job_id in self.job_ids:
            keys += [
                names.job_key(job_id),
                names.celery_result_key(job_id),
                names.followers_key(job_id),
            ]
        self.store.redis.delete(*keys)


@pytest.fixture
def flight() -> Iterator[Flight]:
    url = ClientSettings().redis_url
    store = JobStore(url, ClientSettings(), job_ttl=60)
    try:
        store.redis.ping()
    except redis.ConnectionError:
        store.close()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis answers at {url}")
    made = Flight(store)
    yield made
    made.cleanup()
    store.close()


def _finish(job_id: str, state: JobState, **kwargs: Any) -> str:
    """The worker's FINISH, as it stores a job it ran (the leader's value: Python's)."""

    async def run() -> str:
        ledger = Ledger(
            ClientSettings().redis_url,
            ClientSettings(),
            job_ttl=60,
            lease_seconds=30,
            worker="test-results",
        )
        try:
            return await ledger.finish(job_id, state, **kwargs)
        finally:
            await ledger.close()

    return asyncio.run(run())


def test_a_success_has_one_celery_result_whichever_side_built_it(flight: Flight) -> None:
    leader, outcome, _ = flight.submit()
    follower, follower_outcome, its_leader = flight.submit()
    assert (outcome, follower_outcome, its_leader) == ("leader", "follower", leader)
    result = {
        "text": AWKWARD,
        "finish_reason": "length",
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
        "model": "m",
    }
    assert _finish(leader, JobState.SUCCEEDED, result=result) == "ok"

    python_built = flight.celery_value(leader)
    date = python_built["date_done"]
    assert python_built == json.loads(celery_meta(leader, JobState.SUCCEEDED, result, date=date))
    # The follower's value, built in Lua (FINISH settling the flight), with the same date.
    assert flight.celery_value(follower) == json.loads(
        celery_meta(follower, JobState.SUCCEEDED, result, date=date)
    )

    # A later identical job is a cache hit: its value too is built in Lua (SUBMIT).
    hit, hit_outcome, _ = flight.submit()
    assert hit_outcome == "hit"
    lua_built = flight.celery_value(hit)
    assert lua_built == json.loads(
        celery_meta(hit, JobState.SUCCEEDED, result, date=lua_built["date_done"])
    )


def test_a_failure_has_one_celery_result_whichever_side_built_it(flight: Flight) -> None:
    leader, _, _ = flight.submit()
    follower, outcome, _ = flight.submit()
    assert outcome == "follower"
    assert _finish(leader, JobState.FAILED, error=f"engine: {AWKWARD}") == "ok"

    date = flight.celery_value(leader)["date_done"]
    error = flight.store.get(follower).error
    assert error is not None and AWKWARD in error
    assert flight.celery_value(follower) == json.loads(
        celery_meta(follower, JobState.FAILED, None, error=error, date=date)
    )
