"""The worker's side of the job store (asyncio): admit, finish, leases, reaping.

The scripts themselves live in genq/store (one `.lua` file each), shared with the client, so
both sides apply the same rules to a job record."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from genq import names
from genq.schema import JobState
from genq.store import ADMIT, FINISH, HANDBACK, RELEASE, celery_meta, date_done
from genq.store.scripts import (
    admit_args,
    admit_keys,
    finish_args,
    finish_keys,
    handback_args,
    handback_keys,
    release_args,
    release_keys,
)
from genq.tls import TlsSettings, redis_from_url

__all__ = ["Ledger"]

# A reaper claims an expired lease for this long so two reapers don't both republish it.
_REAP_CLAIM_SECONDS = 30
# Expired leases read per round trip while looking for this model's.
_REAP_PAGE = 500


class Ledger:
    def __init__(
        self, url: str, tls: TlsSettings, *, job_ttl: int, lease_seconds: float, worker: str
    ) -> None:
        self.redis = redis_from_url(url, tls, client=aioredis.Redis, decode_responses=True)
        self._ttl = job_ttl
        self._lease = lease_seconds
        self._worker = worker
        self._admit = self.redis.register_script(ADMIT)
        self._finish = self.redis.register_script(FINISH)
        self._handback = self.redis.register_script(HANDBACK)
        self._release = self.redis.register_script(RELEASE)

    async def close(self) -> None:
        await self.redis.aclose()

    async def admit(self, job_ids: Sequence[str]) -> list[str]:
        """Mark jobs running under a fresh lease, in one round trip; returns per job what
        ADMIT decided (`running` means: this worker runs it)."""
        now = time.time()
        expiry = repr(now + self._lease)
        try:
            return await self._admit_all(job_ids, now, expiry)
        except NoScriptError:  # Redis restarted and lost its scripts
            await self.redis.script_load(ADMIT)
            return await self._admit_all(job_ids, now, expiry)

    async def _admit_all(self, job_ids: Sequence[str], now: float, expiry: str) -> list[str]:
        # EVALSHA straight into the pipeline: a pipeline given registered scripts asks
        # Redis whether they exist (SCRIPT EXISTS) before every execute, a second round
        # trip per admission.
        pipe = self.redis.pipeline(transaction=False)
        started = repr(now)
        for job_id in job_ids:
            keys = admit_keys(job_id)
            pipe.evalsha(
                self._admit.sha,
                len(keys),
                *keys,
                *admit_args(job_id=job_id, now=started, worker=self._worker, lease_expiry=expiry),
            )
        return [str(r) for r in await pipe.execute()]

    async def finish(
        self,
        job_id: str,
        state: JobState,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> str:
        """Store a terminal state and result, unless the job already has one (first wins),
        and settle its single flight in the same step (see genq/store/flight.lua): followers get the
        result, or the failure, or (the leader cancelled or expired) one of them is promoted
        to run in its place. Returns `ok`, `promoted` (call `Courier.reap` to publish the
        promoted follower now: its lease is already expired), `missing`, or the state the job
        already had."""
        now = time.time()
        date = date_done()
        values = {"state": state.value, "finished_at": repr(now), **(fields or {})}
        if error is not None:
            values["error"] = error
        result_json = ""
        if result is not None:
            values["text"] = result["text"]
            values["finish_reason"] = result.get("finish_reason") or ""
            values["usage"] = json.dumps(result["usage"])
            result_json = json.dumps(result)
        # A follower promoted here gets a lease expired at once: see `Courier.reap`.
        args = finish_args(
            job_id=job_id,
            ttl=self._ttl,
            celery_meta=celery_meta(job_id, state, result, error=error, date=date),
            now=repr(now),
            date_done=date,
            result_json=result_json,
            promote_lease=repr(now),
            fields=values,
        )
        return str(await self._finish(keys=finish_keys(job_id), args=args))

    async def renew(self, job_ids: Sequence[str]) -> None:
        """Push the leases of running jobs forward (XX: never resurrect a removed one)."""
        if job_ids:
            expiry = time.time() + self._lease
            await self.redis.zadd(names.LEASES, {i: expiry for i in job_ids}, xx=True)

    async def hand_back(self, job_id: str, *, crashed: bool = False) -> tuple[str, str, int]:
        """Turn a running job `queued` under a short lease; returns (outcome, lease, crashes)
        where lease is what to pass to `release` once the republish is confirmed, and
        crashes counts the engine deaths the job was running at (`crashed`: one more)."""
        lease = repr(time.time() + self._lease)
        outcome = str(
            await self._handback(
                keys=handback_keys(job_id), args=handback_args(job_id=job_id, lease=lease)
            )
        )
        crashes = 0
        if outcome == "queued":
            # Apart from HANDBACK, and harmless if lost: it only decides how cautiously the
            # job runs next (see genq.protocol.CRASHES_HEADER).
            crashes = int(
                await self.redis.hincrby(names.job_key(job_id), "crashes", 1 if crashed else 0)
            )
        return outcome, lease, crashes

    async def release(self, job_id: str, lease: str) -> str:
        return str(
            await self._release(
                keys=release_keys(job_id), args=release_args(job_id=job_id, lease=lease)
            )
        )

    async def expired_leases(self, model: str, limit: int = 100) -> list[tuple[str, str]]:
        """Expired leases of `model`'s jobs, each claimed for this reaper alone.

        The lease set is shared by every model, so it is read page by page and filtered by
        the job's model: a pile of another model's expired leases (a model with no worker
        left) must not hide this model's. A lease whose record is gone is dropped."""
        claimed: list[tuple[str, str]] = []
        start, now = 0, time.time()
        while len(claimed) < limit:
            # decode_responses: (ID, score) pairs, which redis-py's types cannot know.
            rows = cast(
                "list[tuple[str, float]]",
                await self.redis.zrangebyscore(
                    names.LEASES, "-inf", now, start=start, num=_REAP_PAGE, withscores=True
                ),
            )
            if not rows:
                break
            start += len(rows)
            pipe = self.redis.pipeline(transaction=False)
            for job_id, _score in rows:
                pipe.hget(names.job_key(job_id), "model")
            for (job_id, score), owner in zip(rows, await pipe.execute(), strict=False):
                if owner is None:
                    await self.redis.zrem(names.LEASES, job_id)
                elif owner == model and await self.redis.set(
                    names.reap_claim_key(job_id), self._worker, nx=True, ex=_REAP_CLAIM_SECONDS
                ):
                    claimed.append((job_id, repr(score)))
        return claimed

    async def record(self, job_id: str) -> dict[str, str]:
        return cast("dict[str, str]", await self.redis.hgetall(names.job_key(job_id)))

    async def mark_failed_if_known(self, job_id: str, error: str) -> None:
        """A malformed message whose ID we can read: fail its record so nobody waits on it."""
        if await self.redis.exists(names.job_key(job_id)):
            await self.finish(job_id, JobState.FAILED, error=error)
