"""Progress: a streaming job's text, published to Redis while the engine produces it.

A job submitted with `stream: true` gets a Redis Stream (`names.progress_key`) the gateway
relays to its client as server-sent events. A Stream rather than pub/sub, so a gateway that
starts reading late still gets the beginning. Every other job takes the engine's cheap path
and publishes nothing.

Writes are batched by the round trip: pieces that arrive while one XADD is in flight go out
together in the next, so a job costs one Redis write per round trip, not per token, however
fast the engine runs. The final `end` entry is written before the consumer stores the
result, so a reader that sees it knows the record is about to say the rest.

Progress is best effort: the record is the result. A Redis error here is logged and the
job goes on; a reader that missed pieces takes the text from the record at the end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis

from genq import names
from genq.protocol import TaskMessage
from workers.engine import Engine, Generation

__all__ = ["EarlyStart", "generate"]

log = logging.getLogger(__name__)

# A stream outlives its job by this much (refreshed on every write): long enough for a
# gateway to finish relaying, short enough that abandoned streams don't pile up in Redis.
_TTL_SECONDS = 600
# Entries kept per stream, approximately (XADD MAXLEN ~). Each entry is one batch of pieces,
# so a stream holds a whole max_tokens=4096 job; a longer one loses its head, and a reader
# that finds a gap takes the text from the final record instead.
_MAX_ENTRIES = 8192

# Flushers of jobs that ended without a result, left to drain: the loop holds tasks weakly.
_draining: set[asyncio.Task[None]] = set()


async def generate(engine: Engine, redis: aioredis.Redis, message: TaskMessage, *,
                   prompt: Awaitable[Any] | None = None,
                   admitted: Awaitable[bool] | None = None) -> Generation:
    """`engine.generate` for the job in `message` (with its prompt already being rendered,
    if given), publishing its text as it goes if the job streams; if `admitted` is given,
    nothing is published before it says True, and nothing at all if it says False."""
    if not message.spec.stream:
        return await engine.generate(message.job_id, message.spec, prompt=prompt)
    writer = _Writer(redis, message.job_id, attempt=message.attempts + 1, admitted=admitted)
    flusher = asyncio.create_task(writer.run(), name=f"progress-{message.job_id}")
    ok = False
    try:
        generation = await engine.generate(message.job_id, message.spec, on_delta=writer.add,
                                           prompt=prompt)
        ok = True
        return generation
    finally:
        writer.close(ok)
        if ok:  # the end entry must be in before the result is stored
            await flusher
        else:  # cancelled or failed: nothing waits on it, let it drain on its own
            _draining.add(flusher)
            flusher.add_done_callback(_draining.discard)


class EarlyStart:
    """A job in the engine while its admission is still being decided (see the consumer's
    admission loop): `generate` under a gate that `admit` or `abandon` settles once."""

    def __init__(self, engine: Engine, redis: aioredis.Redis, message: TaskMessage, *,
                 prompt: Awaitable[Any] | None) -> None:
        self._gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(
            generate(engine, redis, message, prompt=prompt, admitted=self._gate),
            name=f"early-{message.job_id}")

    def admit(self) -> asyncio.Task[Generation]:
        """It runs here: what it streams may go out; await the task for its result."""
        self._gate.set_result(True)
        return self._task

    def abandon(self) -> None:
        """It does not run here: aborted in the engine, nothing of it published."""
        if not self._gate.done():
            self._gate.set_result(False)
        self._task.cancel()
        # Its failure (say the engine rejected the prompt) is nobody's to report now.
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())


class _Writer:
    def __init__(self, redis: aioredis.Redis, job_id: str, *, attempt: int,
                 admitted: Awaitable[bool] | None = None) -> None:
        self._redis = redis
        self._admitted = admitted
        self._key = names.progress_key(job_id)
        self._attempt = str(attempt)
        self._pending: list[str] = []
        self._offset = 0
        self._end: str | None = None
        self._wake = asyncio.Event()

    def add(self, piece: str) -> None:
        self._pending.append(piece)
        self._wake.set()

    def close(self, ok: bool) -> None:
        self._end = "ok" if ok else "error"
        self._wake.set()

    async def run(self) -> None:
        if self._admitted is not None and not await self._admitted:
            return  # another worker runs it, or nobody: its stream is not this job's
        while True:
            await self._wake.wait()
            self._wake.clear()
            end, pieces, self._pending = self._end, self._pending, []
            try:
                await self._write(pieces, end)
            except Exception as exc:  # Redis away: the record still gets the result
                log.warning("progress of %s not published: %r", self._key, exc)
            if end is not None:
                return

    async def _write(self, pieces: list[str], end: str | None) -> None:
        pipe = self._redis.pipeline(transaction=False)
        if pieces:
            text = "".join(pieces)
            fields: dict[Any, Any] = {"a": self._attempt, "o": self._offset, "t": text}
            pipe.xadd(self._key, fields, maxlen=_MAX_ENTRIES, approximate=True)
            self._offset += len(text)
        if end is not None:
            pipe.xadd(self._key, {"a": self._attempt, "end": end}, maxlen=_MAX_ENTRIES,
                      approximate=True)
        pipe.expire(self._key, _TTL_SECONDS)
        await pipe.execute()
