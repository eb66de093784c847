"""Running jobs: from admission to a stored end.

A job admitted here runs in the engine (it may already have started early, see
admission.py) and ends one of five ways: it succeeded; the engine rejected it (failed, no
retry: it would be rejected again); a passing engine error (handed back for another attempt,
or failed and dead-lettered after the last); the engine died under it (handed back as a
crash suspect, or failed after its last attempt); or it was cancelled, by its client (its
end is recorded) or by the worker stopping (handed back). Whatever the way, the end is
stored with the record's first-result-wins rule, riding out a Redis restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from genq.errors import EngineDeadError, RequestRejectedError
from genq.schema import JobState
from genq.settings import WorkerSettings
from scheduler import AdmissionQueue
from workers.courier import Courier
from workers.engine import Engine, Generation
from workers.faults import REDIS_AWAY
from workers.jobs import Job, JobTable, Phase
from workers.ledger import Ledger
from workers.observers import Observer
from workers.progress import Progress, generate

__all__ = ["Runner"]

log = logging.getLogger(__name__)

# Pause after a Redis error before storing an end again.
_REDIS_RETRY_SECONDS = 1.0
# A finished job's result is kept trying for this long while Redis is away; past it the
# job's lease expires and another attempt produces the result instead.
_FINISH_RETRY_SECONDS = 120.0


class Runner:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        model: str,
        jobs: JobTable,
        queue: AdmissionQueue,
        engine: Engine,
        progress: Progress,
        ledger: Ledger,
        courier: Courier,
        observers: Observer,
        wake: asyncio.Event,
        die: Callable[[BaseException], None],
    ) -> None:
        self._settings = settings
        self._model = model
        self._jobs = jobs
        self._queue = queue
        self._engine = engine
        self._progress = progress
        self._ledger = ledger
        self._courier = courier
        self._observers = observers
        self._wake = wake
        self._die = die
        """Called when the engine died: the worker stops taking work and exits."""

    def start(self, job: Job) -> None:
        """Run an admitted job (phase RUNNING) to its end, then let admission fill its slot."""
        job.started = time.monotonic()
        early = job.early.admit() if job.early is not None else None
        job.early = None
        job.task = asyncio.create_task(self._run(job, early), name=job.job_id)

    def cancel(self, job_id: str) -> None:
        """A client cancelled the job: abort it in the engine if it runs here; if its ADMIT
        is on its way, admission ends it when the reply comes (admission.py)."""
        job = self._jobs.get(job_id)
        if job is None or job.phase is Phase.HELD:
            return  # not running here (yet): ADMIT will find it cancelled in Redis
        job.cancel_requested = True
        if job.phase is Phase.RUNNING and job.task is not None:
            # AsyncLLM.generate aborts the request in the engine. Cancelled on the next turn
            # of the loop: a task cancelled before its first step never enters its body, so
            # nothing would record the cancel or free the slot.
            asyncio.get_running_loop().call_soon(job.task.cancel)

    async def _run(self, job: Job, early: asyncio.Task[Generation] | None) -> None:
        message = job.message
        attempt = message.attempts + 1
        try:
            generation = await (
                early or generate(self._engine, self._progress, message, prompt=job.prompt)
            )
        except asyncio.CancelledError:
            if job.cancel_requested:
                await self.end(
                    job.job_id, JobState.CANCELLED, error="cancelled by the client while running"
                )
                self._observers.revoked(job.job_id)
            elif self._engine.dead:  # cancelled at shutdown after the engine died under it
                await self._crashed(job, EngineDeadError("the engine died"))
            else:  # the worker is stopping: another worker runs it
                await self._courier.hand_back(message, attempts=attempt)
                self._observers.handed_back(job, why="stopping")
        except RequestRejectedError as exc:
            await self._fail(job, f"rejected by the engine: {exc}")
        except EngineDeadError as exc:
            await self._crashed(job, exc)
        except Exception as exc:  # noqa: BLE001 - vLLM's passing errors: retry, within bounds
            if self._engine.dead:
                await self._crashed(job, exc)
            elif attempt >= self._settings.max_attempts:
                await self._fail(job, f"failed after {attempt} attempts: {exc!r}", dead_letter=True)
            else:
                log.warning("job %s: attempt %d failed (%r); retrying", job.job_id, attempt, exc)
                await self._courier.hand_back(message, attempts=attempt)
                self._observers.handed_back(job, why="retry")
        else:
            await self._succeed(job, generation)
        finally:
            self._jobs.remove(job)
            self._wake.set()

    async def _store(self, job_id: str, state: JobState, **kwargs: Any) -> str:
        """Store a job's end, riding out a Redis restart. If Redis stays away too long the
        result is dropped here and the job's expiring lease has it run again elsewhere."""
        deadline = time.monotonic() + _FINISH_RETRY_SECONDS
        while True:
            try:
                return await self._ledger.finish(job_id, state, **kwargs)
            except REDIS_AWAY as exc:
                if time.monotonic() > deadline:
                    log.error("job %s: result not stored (%r); its lease will expire", job_id, exc)
                    return "unstored"
                await asyncio.sleep(_REDIS_RETRY_SECONDS)

    async def _succeed(self, job: Job, generation: Generation) -> None:
        self._queue.charge(
            job.tenant, generation.prompt_tokens + generation.completion_tokens - job.cost
        )
        result = {
            "text": generation.text,
            "finish_reason": generation.finish_reason,
            "usage": {
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
            },
            "model": self._model,
        }
        await self._store(job.job_id, JobState.SUCCEEDED, result=result)
        self._observers.succeeded(
            job,
            completion_tokens=generation.completion_tokens,
            runtime=time.monotonic() - job.started,
        )

    async def _fail(self, job: Job, error: str, *, dead_letter: bool = False) -> None:
        message = job.message
        await self._store(message.job_id, JobState.FAILED, error=error)
        self._observers.failed(message.job_id, error=error)
        if dead_letter:
            headers, body = message.encode(attempts=message.attempts + 1)
            await self._courier.dead_letter(
                headers, body, reason=error, attempts=message.attempts + 1, job_id=message.job_id
            )
            self._observers.dead_lettered(message.job_id, reason=error)

    async def fail_unstarted(self, job: Job, error: str) -> None:
        """Fail a job that never ran (a bug in admission): stored failed, dead-lettered."""
        await self._fail(job, error, dead_letter=True)

    async def end(self, job_id: str, state: JobState, *, error: str) -> None:
        """Record a job cancelled or expired. If identical jobs were waiting on its result
        (single flight), one of them now runs in its place: publish it at once rather than
        at the next reaper pass (its lease is already expired, so `reap` takes it)."""
        if await self._store(job_id, state, error=error) == "promoted":
            try:
                self._observers.reaped(await self._courier.reap())
            except REDIS_AWAY:  # the lease loop's reaper tries again
                log.warning("publishing a promoted follower failed", exc_info=True)

    async def _crashed(self, job: Job, exc: BaseException) -> None:
        """The engine died with this job in it. Stop taking work; hand the job back as a
        crash suspect, or, if this was its last attempt, fail and dead-letter it: a job that
        kills every engine it runs in must not go round the fleet forever."""
        self._die(exc)
        message = job.message
        attempt = message.attempts + 1
        if attempt < self._settings.max_attempts:
            await self._courier.hand_back(message, attempts=attempt, crashed=True)
            self._observers.handed_back(job, why="crash")
            return
        deaths = job.crashes + 1
        reason = f"the engine died while running it {deaths} times"
        if deaths != attempt:
            reason += f" (attempt {attempt} of {self._settings.max_attempts})"
        await self._fail(job, reason, dead_letter=True)

    def running_ids(self) -> list[str]:
        return [job.job_id for job in self._jobs.in_phase(Phase.RUNNING)]
