"""Many clients at the gateway's jobs API at once, as fire-and-forget clients come: a burst
of single-job submissions (`POST /v1/jobs`), and thousands of long polls
(`GET /v1/jobs/{id}?wait=`), each on its own connection.

No load generator of the field does this (vllm bench serve drives completions), so it is
aiohttp's, as vllm bench serve's is: httpx's pool spent 5 s of client CPU on a burst of 512
requests the gateway had answered in under one. The burst measures how long the last of its
requests waited to be accepted; the long polls' jobs are submitted first (a few list POSTs),
then every poll goes out at once and each must answer 200 with its job ended."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

__all__ = ["accept_burst", "long_polls"]

# Jobs per POST /v1/jobs: under the gateway's default GENQ_MAX_JOBS_PER_REQUEST (1,000).
_SUBMIT_CHUNK = 500
# Longest wait a poll asks for (the gateway's GENQ_MAX_WAIT is 60 s by default); a poll
# whose job has not ended by then asks again, as a client would.
_WAIT = 60.0


def long_polls(
    base_url: str, model: str, *, n: int, max_tokens: int = 4, patience: float = 600.0
) -> dict[str, Any]:
    """Submit `n` short jobs, long-poll all of them at once; what came back."""
    return asyncio.run(_run(base_url, model, n=n, max_tokens=max_tokens, patience=patience))


async def _run(
    base_url: str, model: str, *, n: int, max_tokens: int, patience: float
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=_WAIT + 30)
    async with aiohttp.ClientSession(
        base_url, timeout=timeout, connector=aiohttp.TCPConnector(limit=n + 16)
    ) as http:
        ids: list[str] = []
        for start in range(0, n, _SUBMIT_CHUNK):
            jobs = [
                {
                    "model": model,
                    "prompt": f"{i}: poll me",
                    "max_tokens": max_tokens,
                    "ignore_eos": True,
                    "temperature": 0.8,
                }
                for i in range(start, min(n, start + _SUBMIT_CHUNK))
            ]
            async with http.post("/v1/jobs", json=jobs) as reply:
                reply.raise_for_status()
                ids += (await reply.json())["ids"]
        started = time.monotonic()
        deadline = started + patience
        outcomes = await asyncio.gather(*(_poll(http, job_id, deadline) for job_id in ids))
    statuses: dict[str, int] = {}
    for status, _ended in outcomes:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "long_polls": n,
        "ended": sum(1 for _s, ended in outcomes if ended),
        "failed": sum(1 for s, _e in outcomes if s != 200),
        "statuses": statuses,
        "seconds": round(time.monotonic() - started, 2),
    }


def accept_burst(base_url: str, model: str, *, n: int) -> dict[str, Any]:
    """`n` single-job POSTs sent at once (connections opened beforehand, so the figure is the
    gateway's, not the TCP handshakes'): the time until the last was accepted."""
    return asyncio.run(_burst(base_url, model, n=n))


async def _burst(base_url: str, model: str, *, n: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(
        base_url, timeout=aiohttp.ClientTimeout(total=60), connector=aiohttp.TCPConnector(limit=n)
    ) as http:

        async def models() -> None:
            async with http.get("/v1/models") as reply:
                await reply.read()

        async def submit() -> int:
            async with http.post("/v1/jobs", json=body) as reply:
                await reply.read()
                return reply.status

        await asyncio.gather(*(models() for _ in range(n)))  # open them all
        body = {
            "model": model,
            "prompt": "burst",
            "max_tokens": 4,
            "ignore_eos": True,
            "temperature": 0.8,
        }
        started = time.monotonic()
        statuses = await asyncio.gather(*(submit() for _ in range(n)), return_exceptions=True)
        seconds = time.monotonic() - started
    return {
        "burst": n,
        "accepted": sum(1 for s in statuses if s == 202),
        "seconds": round(seconds, 3),
    }


async def _poll(http: aiohttp.ClientSession, job_id: str, deadline: float) -> tuple[int, bool]:
    """(the last status, whether the job ended): asked again until it ends or the deadline."""
    while True:
        try:
            async with http.get(f"/v1/jobs/{job_id}", params={"wait": str(_WAIT)}) as reply:
                if reply.status != 200:
                    return reply.status, False
                state = (await reply.json())["state"]
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return 0, False
        if state in ("succeeded", "failed", "cancelled", "expired"):
            return 200, True
        if time.monotonic() >= deadline:
            return 200, False
