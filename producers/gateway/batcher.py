"""Group commit: the jobs of every request that arrives while a submission is out go
together in the next one.

`Client.submit_many` costs a few Redis round trips (records, idempotency keys, tenant
demand) and one publisher confirm window whatever the number of jobs; the publisher holds one
batch in flight at a time. Submitting each request on its own, 512 requests arriving at once
would queue 512 confirm windows behind one another. Here one task takes everything pending,
submits it as one batch on the gateway's client thread, and hands each request its IDs; the
requests that arrive meanwhile form the next batch. Alone, a request waits for nothing but
its own submission; under load, the cost per request falls as the batches grow.

A request is never split across batches, so it is accepted or refused whole. If the broker
confirms only part of a batch, a request all of whose jobs were confirmed is accepted; the
others get a `PublishError` naming just their own accepted and unaccepted jobs, exactly as if
they had been submitted alone (submission.py then cancels what a retry would duplicate)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from genq.errors import PublishError
from genq.schema import JobSpec
from genq.tasks import stop_tasks

__all__ = ["Batcher"]

log = logging.getLogger(__name__)

# Jobs per batch before the next request waits for the next one: a single request may be
# larger (a Batch API file), but many small ones are not merged past this, so one batch's
# confirm window stays short for the completions queued behind it.
_MAX_BATCH_JOBS = 2000

SubmitMany = Callable[[list[JobSpec]], list[str]]


@dataclass(eq=False)
class _Request:
    specs: list[JobSpec]
    future: asyncio.Future[list[str]]


class Batcher:
    def __init__(self, submit_many: SubmitMany, executor: Executor) -> None:
        self._submit_many = submit_many
        self._executor = executor
        self._pending: list[_Request] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        """Submissions made, for the metrics: requests over batches is the merge factor."""

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await stop_tasks(self._task)
        for request in self._pending:
            if not request.future.done():
                request.future.cancel()

    async def submit(self, specs: list[JobSpec]) -> list[str]:
        """Their IDs once accepted; raises what `Client.submit_many` would."""
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(list(specs), future))
        self._kick.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._kick.wait()
            self._kick.clear()
            while self._pending:
                batch = self._take()
                specs = [spec for request in batch for spec in request.specs]
                try:
                    ids = await loop.run_in_executor(self._executor, self._submit_many, specs)
                except PublishError as exc:
                    _split_failure(batch, exc)
                except Exception as exc:  # noqa: BLE001 - each request re-raises it
                    for request in batch:
                        _settle(request, exc=exc)
                else:
                    start = 0
                    for request in batch:
                        _settle(request, ids=ids[start : start + len(request.specs)])
                        start += len(request.specs)
                self.batches += 1

    def _take(self) -> list[_Request]:
        """The oldest pending requests, up to `_MAX_BATCH_JOBS` jobs (at least one request)."""
        n, jobs = 0, 0
        for request in self._pending:
            if n and jobs + len(request.specs) > _MAX_BATCH_JOBS:
                break
            n += 1
            jobs += len(request.specs)
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch


def _split_failure(batch: list[_Request], exc: PublishError) -> None:
    """Each request's share of a partly published batch."""
    accepted = dict(zip(exc.accepted_positions, exc.accepted, strict=True))
    start = 0
    for request in batch:
        span = range(start, start + len(request.specs))
        start += len(request.specs)
        if all(p in accepted for p in span):
            _settle(request, ids=[accepted[p] for p in span])
            continue
        mine = [p for p in span if p in accepted]
        _settle(
            request,
            exc=PublishError(
                str(exc),
                accepted=[accepted[p] for p in mine],
                accepted_positions=[p - span.start for p in mine],
                unaccepted=[p - span.start for p in span if p not in accepted],
            ),
        )


def _settle(
    request: _Request, *, ids: list[str] | None = None, exc: BaseException | None = None
) -> None:
    if request.future.done():  # its client hung up and the handler was cancelled
        return
    if exc is not None:
        request.future.set_exception(exc)
    else:
        request.future.set_result(ids or [])
