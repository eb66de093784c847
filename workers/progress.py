"""Progress: a streaming job's text, published to Redis while the engine produces it.

A job submitted with `stream: true` gets a Redis Stream (`names.progress_key`) the gateway
relays to its client as server-sent events. A Stream rather than pub/sub, so a gateway that
starts reading late still gets the beginning. Every other job takes the engine's cheap path
and publishes nothing.

Writes are batched by the round trip, across jobs: pieces that arrive while one write is in
flight go out together in the next, one pipeline for every streaming job of the worker, so
streaming costs one Redis round trip per round, not one per job or per token, however many
jobs stream and however fast the engine runs. The final `end` entry is written before the
job's result is stored, so a reader that sees it knows the record is about to say the rest.

Progress is best effort: the record is the result. A Redis error here is logged and the
job goes on; a reader that missed pieces takes the text from the record at the end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis

from genq import names
from genq.protocol import (
    PROGRESS_ATTEMPT,
    PROGRESS_END,
    PROGRESS_END_ERROR,
    PROGRESS_END_OK,
    PROGRESS_OFFSET,
    PROGRESS_TEXT,
    TaskMessage,
)
from genq.tasks import stop_tasks
from workers.engine import Engine, Generation
from workers.faults import REDIS_AWAY

__all__ = ["Progress", "generate"]

log = logging.getLogger(__name__)

# A stream outlives its job by this much (refreshed on every write): long enough for a
# gateway to finish relaying, short enough that abandoned streams don't pile up in Redis.
_TTL_SECONDS = 600
# Entries kept per stream, approximately (XADD MAXLEN ~). Each entry is one batch of pieces,
# so a stream holds a whole max_tokens=4096 job; a longer one loses its head, and a reader
# that finds a gap takes the text from the final record instead.
_MAX_ENTRIES = 8192


async def generate(
    engine: Engine,
    progress: Progress,
    message: TaskMessage,
    *,
    prompt: Awaitable[Any] | None = None,
    admitted: Awaitable[bool] | None = None,
) -> Generation:
    """`engine.generate` for the job in `message` (with its prompt already being rendered,
    if given), publishing its text as it goes if the job streams; if `admitted` is given,
    nothing is published before it says True, and nothing at all if it says False."""
    if not message.spec.stream:
        return await engine.generate(message.job_id, message.spec, prompt=prompt)
    stream = progress.open(message.job_id, attempt=message.attempts + 1, admitted=admitted)
    ok = False
    try:
        generation = await engine.generate(
            message.job_id, message.spec, on_delta=stream.add, prompt=prompt
        )
        ok = True
        return generation
    finally:
        stream.close(ok)
        if ok:  # the end entry must be in before the result is stored
            await stream.ended


class Progress:
    """The one writer of a worker's progress streams: whatever every streaming job produced
    while the last write was out goes in the next, as one pipeline. With a writer per job,
    a full engine of streaming jobs cost a pipeline per job per engine step (hundreds per
    step), on the core the engine's own frontend needs."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._due: dict[_Stream, None] = {}
        """Streams with something to write, in the order they asked (an ordered set)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def open(
        self, job_id: str, *, attempt: int, admitted: Awaitable[bool] | None = None
    ) -> _Stream:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="progress")
        return _Stream(self, job_id, attempt=attempt, admitted=admitted)

    async def stop(self) -> None:
        await stop_tasks(self._task)

    def due(self, stream: _Stream) -> None:
        self._due[stream] = None
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            streams, self._due = list(self._due), {}
            now = time.monotonic()
            pipe = self._redis.pipeline(transaction=False)
            ending = [s for s in streams if s.write_into(pipe, now)]
            try:
                await pipe.execute()
            except REDIS_AWAY as exc:  # the records still get the results
                log.warning("progress of %d streams not published: %r", len(streams), exc)
            except Exception:  # a bug: logged; the writer must go on, or jobs never end
                log.exception("progress of %d streams not published", len(streams))
            for stream in ending:
                stream.finish()


class _Stream:
    """One job's progress: its pieces wait here for the writer's next round."""

    def __init__(
        self, progress: Progress, job_id: str, *, attempt: int, admitted: Awaitable[bool] | None
    ) -> None:
        self._progress = progress
        self._key = names.progress_key(job_id)
        self._attempt = str(attempt)
        self._pending: list[str] = []
        self._offset = 0
        self._end: str | None = None
        self._expires_at = 0.0
        self._open = admitted is None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done once the `end` entry is written (or nothing will be: not admitted)."""
        if admitted is not None:
            self._gate = asyncio.ensure_future(self._await_gate(admitted))

    async def _await_gate(self, admitted: Awaitable[bool]) -> None:
        if await admitted:
            self._open = True
            if self._pending or self._end is not None:
                self._progress.due(self)
        else:  # another worker runs it, or nobody: its stream is not this job's
            self._pending = []
            self.finish()

    def add(self, piece: str) -> None:
        self._pending.append(piece)
        if self._open:
            self._progress.due(self)

    def close(self, ok: bool) -> None:
        self._end = PROGRESS_END_OK if ok else PROGRESS_END_ERROR
        if self._open:
            self._progress.due(self)

    def finish(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def write_into(self, pipe: Any, now: float) -> bool:
        """Queue what is pending on `pipe`; whether that includes the end."""
        pieces, self._pending, end = self._pending, [], self._end
        if pieces:
            text = "".join(pieces)
            fields: dict[Any, Any] = {
                PROGRESS_ATTEMPT: self._attempt,
                PROGRESS_OFFSET: self._offset,
                PROGRESS_TEXT: text,
            }
            pipe.xadd(self._key, fields, maxlen=_MAX_ENTRIES, approximate=True)
            self._offset += len(text)
        if end is not None:
            pipe.xadd(
                self._key,
                {PROGRESS_ATTEMPT: self._attempt, PROGRESS_END: end},
                maxlen=_MAX_ENTRIES,
                approximate=True,
            )
        # The TTL is renewed at the first write, the end, and once in a while between.
        if end is not None or now >= self._expires_at:
            pipe.expire(self._key, _TTL_SECONDS)
            self._expires_at = now + _TTL_SECONDS / 10
        return end is not None
