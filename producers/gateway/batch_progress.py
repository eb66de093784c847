"""Moving a batch on when it is read: count its jobs' states, and once all have ended write
the output and error files, once (under a lock in Redis), and close the batch."""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis

from genq import names
from genq.schema import TERMINAL_STATES, JobState
from genq.store import decode_record
from producers.gateway.batch_store import CHUNK, BatchStore
from producers.gateway.batchlines import output_line
from producers.gateway.context import Gateway
from producers.gateway.decoded import text_hash
from producers.gateway.files import FileStore

__all__ = ["cancel_unfinished", "refresh"]

# Long enough to write a 50,000-line batch's files; a gateway that died holding it frees the
# batch for another after this.
_FINALIZE_LOCK_SECONDS = 300
_ENDED = {s.value for s in TERMINAL_STATES}


async def _states(redis: aioredis.Redis, job_ids: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for start in range(0, len(job_ids), CHUNK):
        pipe = redis.pipeline(transaction=False)
        for job_id in job_ids[start : start + CHUNK]:
            pipe.hget(names.job_key(job_id), "state")
        out += await pipe.execute()
    return out


async def cancel_unfinished(gw: Gateway, batches: BatchStore, batch_id: str) -> None:
    requests = await batches.requests(batch_id)
    job_ids = [job_id for _, job_id in requests]
    states = await _states(gw.redis, job_ids)
    live = [j for j, s in zip(job_ids, states, strict=True) if s is not None and s not in _ENDED]

    def cancel() -> None:
        for job_id in live:
            gw.client.cancel(job_id)

    await gw.call(cancel)


async def refresh(
    gw: Gateway,
    batches: BatchStore,
    files: FileStore,
    raw: dict[str, str],
) -> dict[str, str]:
    """Count a running batch's jobs; finish it once they have all ended."""
    if raw["status"] not in ("in_progress", "cancelling", "finalizing"):
        return raw
    batch_id = raw["id"]
    requests = await batches.requests(batch_id)
    states = await _states(gw.redis, [job_id for _, job_id in requests])
    if (
        raw["status"] == "in_progress"
        and not raw.get("expiring")
        and time.time() >= float(raw["expires_at"])
        and not all(s is None or s in _ENDED for s in states)
    ):
        # The window closed: what has not run, won't (OpenAI's `expired`).
        await batches.update(batch_id, expiring="1")
        raw["expiring"] = "1"
        await cancel_unfinished(gw, batches, batch_id)
        states = await _states(gw.redis, [job_id for _, job_id in requests])
    counts = {
        "completed": sum(s == JobState.SUCCEEDED.value for s in states),
        "failed": sum(s is None or (s in _ENDED and s != JobState.SUCCEEDED.value) for s in states),
    }
    raw.update({k: str(v) for k, v in counts.items()})
    if counts["completed"] + counts["failed"] < len(states):
        await batches.update(batch_id, **counts)
        return raw
    return await _finalize(gw, batches, files, raw, requests)


async def _finalize(
    gw: Gateway,
    batches: BatchStore,
    files: FileStore,
    raw: dict[str, str],
    requests: list[tuple[str, str]],
) -> dict[str, str]:
    batch_id = raw["id"]
    lock = names.batch_lock_key(batch_id)
    if not await gw.redis.set(lock, "1", nx=True, ex=_FINALIZE_LOCK_SECONDS):
        return {**raw, "status": "finalizing"}  # another gateway is writing its files
    try:
        current = text_hash(await gw.redis.hgetall(names.batch_key(batch_id)))
        if current.get("status") not in ("in_progress", "cancelling", "finalizing"):
            return dict(current)  # finished by another gateway meanwhile
        now = time.time()
        await batches.update(batch_id, status="finalizing", finalizing_at=repr(now))
        expired = bool(raw.get("expiring"))
        output: list[str] = []
        errors: list[str] = []
        for start in range(0, len(requests), CHUNK):
            chunk = requests[start : start + CHUNK]
            pipe = gw.redis.pipeline(transaction=False)
            for _, job_id in chunk:
                pipe.hgetall(names.job_key(job_id))
            for (custom_id, _), record in zip(chunk, await pipe.execute(), strict=True):
                line, failed = output_line(
                    custom_id,
                    decode_record(record) if record else None,
                    endpoint=raw["endpoint"],
                    expired=expired,
                )
                (errors if failed else output).append(json.dumps(line))
        final = {
            "status": "cancelled"
            if raw["status"] == "cancelling"
            else "expired"
            if expired
            else "completed"
        }
        final[f"{final['status']}_at"] = repr(time.time())
        final["finalizing_at"] = repr(now)
        for name, lines in (("output_file_id", output), ("error_file_id", errors)):
            if lines:
                made = await files.create(
                    raw["tenant"],
                    filename=f"{batch_id}_{name[:-8]}.jsonl",
                    purpose="batch_output",
                    content="\n".join(lines) + "\n",
                )
                final[name] = made["id"]
        await batches.update(batch_id, **final)
        return {**raw, **final}
    finally:
        await gw.redis.delete(lock)
