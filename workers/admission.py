"""Admission: which held jobs enter the engine, decided by score, recorded by ADMIT.

A delivered job is held in the admission queue (scheduler/) until the engine has room; then
the best candidates go, as a batch, through one ADMIT round trip to Redis, which records
them `running` under this worker's lease (or says why not: another worker runs it, it
expired, it ended). Each job enters the engine while its ADMIT is on the way (an early
start: the engine's first step overlaps the round trip); nothing of it is published unless
ADMIT says it runs here, and any other answer aborts it in the engine, a step's work at
most. A crash suspect never starts early: it must not reach the engine unless admitted.

Redis away: the batch goes back to the broker and admission tries again in a second. Any
other error is a bug: its jobs fail with the reason and are dead-lettered, so a bug never
loops a batch through the broker forever."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from genq.errors import ValidationError
from genq.protocol import TaskMessage, decode_task
from genq.schema import JobState
from genq.settings import WorkerSettings
from scheduler import AdmissionQueue, Candidate
from scheduler.refill import RefillWatch
from scheduler.turns import expected_tokens
from workers.broker import BrokerLink, Delivery
from workers.courier import Courier
from workers.credit import Credit
from workers.engine import Engine, Generation
from workers.faults import REDIS_AWAY
from workers.jobs import Job, JobTable, Phase, score_key
from workers.ledger import Ledger
from workers.observers import Observer
from workers.progress import Progress, generate
from workers.running import Runner

__all__ = ["Admission", "Admit", "EarlyStart"]

log = logging.getLogger(__name__)

# Pause after Redis failed an admission before trying again.
_REDIS_RETRY_SECONDS = 1.0


class Admit(enum.Enum):
    """What ADMIT decided for one job (genq/store's ADMIT script)."""

    RUNNING = "running"
    """Recorded running under this worker's lease: run it here."""
    LEASED = "leased"
    """A live worker runs it: this copy is surplus."""
    EXPIRED = "expired"
    """Its deadline passed (or it had already expired): record it expired."""
    MISSING = "missing"
    """No record: expired from Redis, or never submitted through genq."""
    ENDED = "ended"
    """It already ended (succeeded, failed, cancelled): this copy is surplus."""

    @classmethod
    def of(cls, reply: str) -> Admit:
        try:
            return cls(reply)
        except ValueError:
            return cls.ENDED


class EarlyStart:
    """A job in the engine while its admission is decided: `generate` under a gate that
    `admit` or `abandon` settles once."""

    def __init__(
        self,
        engine: Engine,
        progress: Progress,
        message: TaskMessage,
        *,
        prompt: Awaitable[Any] | None,
    ) -> None:
        self._gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(
            generate(engine, progress, message, prompt=prompt, admitted=self._gate),
            name=f"early-{message.job_id}",
        )

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


class Admission:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        jobs: JobTable,
        queue: AdmissionQueue,
        refill: RefillWatch,
        credit: Credit,
        runner: Runner,
        ledger: Ledger,
        engine: Engine,
        progress: Progress,
        broker: BrokerLink,
        courier: Courier,
        observers: Observer,
        wake: asyncio.Event,
        accepting: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._queue = queue
        self._refill = refill
        self._credit = credit
        self._runner = runner
        self._ledger = ledger
        self._engine = engine
        self._progress = progress
        self._broker = broker
        self._courier = courier
        self._observers = observers
        self._wake = wake
        self._accepting = accepting
        """False once the worker stops, or its engine died: nothing more is admitted."""
        self._refill_timer: asyncio.TimerHandle | None = None
        self._side: set[asyncio.Future[None]] = set()
        """Ends being stored and dead letters being sent: kept until done (the loop holds
        tasks only weakly)."""

    # -- deliveries (on the loop, from the broker thread) ------------------------------------

    def on_delivery(self, delivery: Delivery) -> None:
        try:
            message = decode_task(delivery.headers, delivery.body)
        except ValidationError as exc:
            self._spawn(self._reject(delivery, exc))
            return
        if message.job_id in self._jobs:
            # A second copy of a job this worker already has, in any phase (a republish
            # raced the original): keep one.
            self._broker.ack(delivery.epoch, delivery.tag)
            return
        # Woken first: when this wakes the admission loop, the job's ADMIT goes out before
        # its prompt is rendered (see Engine.render_soon).
        self._wake.set()
        job = Job(
            delivery,
            message,
            cost=expected_tokens(message.spec.prompt_chars(), message.spec.max_tokens),
            prompt=self._engine.render_soon(message.spec),
        )
        self._jobs.add(job)
        candidate = _candidate(job)
        self._queue.add(candidate)
        self._refill.delivered(delivery.level, score_key(candidate, self._settings))
        self._observers.received(job)

    async def _reject(self, delivery: Delivery, error: ValidationError) -> None:
        log.warning("dead-lettering a malformed message: %s", error)
        try:
            await self._courier.reject(delivery.headers, delivery.body, error)
        finally:
            self._broker.ack(delivery.epoch, delivery.tag)
            self._observers.dead_lettered(None, reason=str(error))

    def on_reset(self, epoch: int) -> None:
        """The connection dropped: its unacked messages went back to the broker."""
        for job in self._jobs.in_phase(Phase.HELD):
            if job.delivery.epoch == epoch:
                self._queue.remove(job.job_id)
                self._jobs.remove(job)

    # -- admitting ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.admit_ready()

    async def admit_ready(self) -> None:
        """Admit the best held jobs while the engine has room."""
        self._credit.resume_if_room()
        while len(self._queue) and self._accepting():
            room = self._credit.room()
            if room <= 0:
                break
            batch = self._next_batch(room)
            if not batch:
                break  # only crash suspects held, and one is running: its end wakes us
            for job in batch:
                self._jobs.move(job, Phase.ADMITTING)
                if not job.crashes:
                    job.early = EarlyStart(
                        self._engine, self._progress, job.message, prompt=job.prompt
                    )
            try:
                replies = await self._ledger.admit([job.job_id for job in batch])
            except asyncio.CancelledError:  # stopping: the broker link returns the messages
                for job in batch:
                    self._abandon_early(job)
                    self._jobs.remove(job)
                raise
            except REDIS_AWAY as exc:
                log.warning("admission failed (%r); handing %d messages back", exc, len(batch))
                self._give_back(batch)
                await asyncio.sleep(_REDIS_RETRY_SECONDS)
                continue
            except Exception as exc:  # a bug: surfaced on the jobs, never looped
                log.exception("admission of %d jobs failed", len(batch))
                await self._fail_all(batch, f"the worker failed admitting it: {exc!r}")
                continue
            self._credit.admitted()
            for job, reply in zip(batch, replies, strict=True):
                self._act(job, Admit.of(reply))
            await self._credit.hold_off_if_lean()
        self._credit.set_surge()

    def _next_batch(self, room: int) -> list[Job]:
        """Up to `room` best candidates, but never two crash suspects in the engine at once:
        a second suspect waits (it keeps its place) without holding up the jobs behind it;
        and none while a better job may be about to arrive (`_held_back`)."""
        suspect_in = any(job.crashes for job in self._jobs.in_phase(Phase.RUNNING))
        batch: list[Job] = []
        waiting: list[Candidate[Job]] = []
        while len(batch) < room and len(self._queue):
            if self._held_back(self._queue.peek()):
                break
            candidate: Candidate[Job] = self._queue.pop()
            job = candidate.payload
            self._refill.taken(job.delivery.level, time.monotonic())
            if job.crashes:
                if suspect_in:
                    waiting.append(candidate)
                    continue
                suspect_in = True
            batch.append(job)
        for candidate in waiting:  # back in the queue, its tenant's admission charge refunded
            self._queue.charge(candidate.tenant, -candidate.cost)
            self._queue.add(candidate)
        return batch

    def _held_back(self, candidate: Candidate[Job]) -> bool:
        """Whether a better job may be a broker round trip away (scheduler/refill.py); if
        so, admission looks again when that refill is due."""
        now = time.monotonic()
        due = self._refill.held_back(score_key(candidate, self._settings), now)
        if due is None:
            return False
        if self._refill_timer is not None:
            self._refill_timer.cancel()
        self._refill_timer = asyncio.get_running_loop().call_later(due - now, self._wake.set)
        return True

    def _act(self, job: Job, admit: Admit) -> None:
        delivery = job.delivery
        if admit is not Admit.RUNNING or job.cancel_requested:
            self._abandon_early(job)
        if admit is Admit.RUNNING and job.cancel_requested:
            # Cancelled after ADMIT ran in Redis, before its reply came back: the cancel
            # found the job running but not yet here (Runner.cancel).
            self._jobs.remove(job)
            self._spawn(
                self._runner.end(
                    job.job_id, JobState.CANCELLED, error="cancelled by the client while running"
                )
            )
            self._observers.revoked(job.job_id)
        elif admit is Admit.RUNNING:
            self._jobs.move(job, Phase.RUNNING)
            self._runner.start(job)
            self._observers.started(job)
        else:
            self._jobs.remove(job)
            if admit is Admit.EXPIRED:
                self._spawn(
                    self._runner.end(
                        job.job_id, JobState.EXPIRED, error="deadline passed before the job started"
                    )
                )
                self._observers.revoked(job.job_id, expired=True)
            elif admit is Admit.MISSING:
                reason = "no job record in Redis (expired, or not submitted through genq)"
                self._spawn(
                    self._courier.dead_letter(
                        delivery.headers,
                        delivery.body,
                        attempts=job.message.attempts,
                        job_id=job.job_id,
                        reason=reason,
                    )
                )
                self._observers.failed(job.job_id, error="no job record")
                self._observers.dead_lettered(job.job_id, reason=reason)
            # LEASED (a live worker runs it) and ENDED: this copy is surplus.
        if admit is not Admit.RUNNING or job.cancel_requested:  # it never ran: charge back
            self._queue.charge(job.tenant, -job.cost)
        # Ack only now: ADMIT has recorded the job, so the message is no longer its only trace.
        self._broker.ack(delivery.epoch, delivery.tag)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    def _abandon_early(self, job: Job) -> None:
        if job.early is not None:
            job.early.abandon()
            job.early = None
            self._observers.early_aborted(job)

    def _give_back(self, batch: list[Job]) -> None:
        """These jobs will not run here (now): abort what started early, requeue them."""
        for job in batch:
            self._abandon_early(job)
            # Out of the table before the requeue: their redeliveries are not copies.
            self._jobs.remove(job)
            self._broker.requeue(job.delivery.epoch, job.delivery.tag)
            self._queue.charge(job.tenant, -job.cost)

    async def _fail_all(self, batch: list[Job], error: str) -> None:
        for job in batch:
            self._abandon_early(job)
            self._jobs.remove(job)
            self._queue.charge(job.tenant, -job.cost)
            await self._runner.fail_unstarted(job, error)
            self._broker.ack(job.delivery.epoch, job.delivery.tag)


def _candidate(job: Job) -> Candidate[Job]:
    return Candidate(
        job_id=job.job_id,
        priority=job.message.spec.priority,
        cost=job.cost,
        enqueued_at=job.message.enqueued_at,
        tenant=job.tenant,
        payload=job,
    )
