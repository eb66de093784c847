"""The GPU consumer: one vLLM engine, many jobs in flight, admitted by score.

Runs on a thread of its own with an asyncio loop that hosts the engine (vLLM's AsyncLLM
needs one), the Redis ledger and every running job; the Celery worker's main thread keeps
doing what Celery does (remote control, heartbeats, shutdown).

Credit design: ack at admission, with a lease. A job is acked when it enters the engine,
after ADMIT has recorded it `running` under a lease this worker renews. So what the worker
holds unacked is only its small not-yet-started window (levels × window), the best of
which it admits whenever the engine has room; running jobs never count against prefetch,
never hoard work from idle workers and never reach RabbitMQ's consumer_timeout, however long
they run. A worker that dies stops renewing; any worker's reaper then republishes its jobs
with their original enqueue time (workers/courier.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from genq import names
from genq.errors import EngineDeadError, RequestRejectedError, ValidationError
from genq.protocol import TaskMessage, decode_task, encode_task
from genq.schema import JobState
from genq.settings import WorkerSettings
from scheduler import Candidate, create_admission_queue, static_key
from scheduler.refill import RefillWatch
from scheduler.surge import surge_prefetch
from scheduler.turns import expected_tokens
from workers.broker import BrokerLink, Delivery
from workers.courier import Courier, crashes
from workers.engine import Engine, Generation
from workers.events import TaskEvents
from workers.ledger import Ledger
from workers.progress import EarlyStart, Progress, generate

__all__ = ["EXIT_ENGINE_DEAD", "GpuConsumer"]

log = logging.getLogger(__name__)

# A worker's stats key outlives a few missed beats, then disappears with a dead worker.
_HEARTBEAT_PERIOD = 1.0
_HEARTBEAT_TTL = 5

# Pause after a Redis error before trying again (admission, finishing a job).
_REDIS_RETRY_SECONDS = 1.0
# A finished job's result is kept trying for this long while Redis is away; past it the
# job's lease expires and another attempt produces the result instead.
_FINISH_RETRY_SECONDS = 120.0
# After the engine died, running jobs see it at once (EngineDeadError) and hand themselves
# back as crash suspects; the ones that don't within this long are cancelled and handed back.
_DEAD_ENGINE_GRACE = 10.0
# Stopping waits this long for cancelled tasks (hand-backs publish within 30 s), then goes
# on: redis-py's asyncio client can swallow a cancellation that lands mid-command (seen: 3
# in 50 tries), and a task that never ends must not keep a dead worker from exiting.
_CANCEL_WAIT_SECONDS = 45.0

EXIT_ENGINE_DEAD = 70
"""Exit status when the engine died: the worker's supervisor should restart it."""


@dataclass(slots=True)
class _Running:
    message: TaskMessage
    cost: float = 0.0
    """Tokens charged to its tenant at admission (fair policy), trued up when it ends."""
    task: asyncio.Task[None] | None = None
    prompt: asyncio.Future[Any] | None = None
    """Its prompt, rendered (tokenized) while it was held: see Engine.render_soon."""
    early: asyncio.Task[Generation] | None = None
    """Its generation, if it entered the engine while its admission was decided."""
    cancel_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    crashes: int = 0
    """Engine deaths it was running at before this attempt: > 0 makes it a crash suspect,
    which never shares the engine with another (see workers/courier.py)."""


class GpuConsumer:
    def __init__(self, *, settings: WorkerSettings, engine_args: Any, served_model: str,
                 app: Celery, hostname: str) -> None:
        self.settings = settings
        self.model = served_model
        self.hostname = hostname
        self._engine_args = engine_args
        self._app = app
        self._queue = create_admission_queue(settings.policy, fair_levels=settings.fair_levels,
                                             alpha=settings.alpha,
                                             beta=settings.beta)
        self._held: dict[str, Candidate[Delivery]] = {}
        self._refill = RefillWatch(settings.refill_wait)
        self._refill_timer: asyncio.TimerHandle | None = None
        self._last_admission = time.monotonic()
        self._holding_off = False
        self._surge = 0
        """The broker's surge prefetch (scheduler/surge.py): 0 but while the engine is empty."""
        self._lean = False
        """Held off before and still slow: give the window back as soon as the engine is
        full again, not after another hold_seconds."""
        self._running: dict[str, _Running] = {}
        self._admitting: set[str] = set()
        """Jobs whose ADMIT is on its way to Redis or back."""
        self._cancelled: set[str] = set()
        """Of those, the ones a client cancelled meanwhile (`_on_cancel`)."""
        self._early: dict[str, EarlyStart] = {}
        """Jobs in the engine whose ADMIT is on its way (`_start_early`)."""
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        """Shutting down: nothing more is admitted; what is held goes back to the broker."""
        self._thread = threading.Thread(target=self._thread_main, name="genq-gpu", daemon=True)
        self.fatal: BaseException | None = None
        self.stats = {"admitted": 0, "succeeded": 0, "failed": 0, "handed_back": 0,
                      "reaped": 0, "dead_lettered": 0, "held_off": 0, "early_aborted": 0,
                      "surges": 0}

    # -- lifecycle, called from Celery's thread ----------------------------------------------

    def start(self, timeout: float = 900.0) -> None:
        """Start the engine and begin consuming; returns once jobs can run."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"engine did not start within {timeout} s")
        if self._startup_error is not None:
            raise RuntimeError(f"engine failed to start: {self._startup_error}") \
                from self._startup_error

    def stop(self) -> None:
        """Graceful: stop taking jobs, let running ones finish within the grace period, hand
        back the rest, shut the engine down."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self.settings.grace_period + 60)

    # -- the loop thread ---------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                log.exception("GPU consumer crashed")
                self.fatal = exc
        if self.fatal is not None:
            # The engine is gone and the jobs are handed back: exit so a supervisor restarts
            # a whole worker (Celery gives no way to set its exit status from another thread).
            log.critical("engine dead (%s); exiting with status %d", self.fatal, EXIT_ENGINE_DEAD)
            logging.shutdown()
            os._exit(EXIT_ENGINE_DEAD)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.engine = Engine.start(self._engine_args)
        self.capacity = self.engine.max_num_seqs + self.settings.admit_headroom
        self.ledger = Ledger(self.settings.redis_url, job_ttl=self.settings.job_ttl,
                             lease_seconds=self.settings.lease_seconds, worker=self.hostname)
        self.progress = Progress(self.ledger.redis)
        self.events = TaskEvents(self._app, self.hostname)
        self.events.start()
        self.broker = BrokerLink(
            self.settings.broker_url, model=self.model, levels=self.settings.levels,
            window=self.settings.window, loop=self._loop,
            on_delivery=self._on_delivery, on_reset=self._on_reset,
        )
        self.courier = Courier(self.broker, self.ledger, model=self.model,
                               max_attempts=self.settings.max_attempts)
        self.broker.start()
        background = [
            asyncio.create_task(self._admission_loop(), name="admission"),
            asyncio.create_task(self._lease_loop(), name="leases"),
            asyncio.create_task(self._cancel_listener(), name="cancels"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._hold_off_loop(), name="hold-off"),
        ]
        self._ready.set()
        log.info("GPU consumer ready: model %s, %s", self.model, self.engine.describe())
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(background)

    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        self.broker.pause()
        self._stopping = True
        grace = _DEAD_ENGINE_GRACE if self.fatal is not None else self.settings.grace_period
        deadline = time.monotonic() + grace
        # An admission already sent to Redis counts as running: cancelled mid-way, it would
        # leave its jobs marked running with nobody running them (seen in CI).
        while (self._running or self._admitting) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = [r.task for r in self._running.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CANCEL_WAIT_SECONDS)
        for task in background:
            task.cancel()
        await asyncio.wait(background, timeout=_CANCEL_WAIT_SECONDS)
        await self.progress.stop()
        self.broker.stop()  # held, unacked messages go back to their queues
        self.events.stop()
        try:
            await self.ledger.redis.delete(names.worker_stats_key(self.hostname))
        except Exception:  # Redis away: the key expires by itself
            pass
        await self.ledger.close()
        self.engine.shutdown()
        log.info("GPU consumer stopped: %s", self.stats)

    # -- deliveries (on the loop, from the broker thread) ------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            message = decode_task(delivery.headers, delivery.body)
        except ValidationError as exc:
            asyncio.ensure_future(self._reject(delivery, exc))
            return
        job_id = message.job_id
        if job_id in self._held or job_id in self._running or job_id in self._admitting:
            # A second copy of a job this worker already has (a republish raced the
            # original): keep one.
            self.broker.ack(delivery.epoch, delivery.tag)
            return
        assert self._wake is not None
        # Woken first: when this wakes the admission loop, the job's ADMIT goes out before
        # its prompt is rendered (see Engine.render_soon).
        self._wake.set()
        candidate = Candidate(job_id=job_id, priority=message.spec.priority,
                              cost=expected_tokens(message.spec.prompt_chars(),
                                                   message.spec.max_tokens),
                              enqueued_at=message.enqueued_at,
                              tenant=message.spec.tenant or "default",
                              payload=(delivery, message, self.engine.render_soon(message.spec)))
        self._held[job_id] = candidate
        self._queue.add(candidate)
        self._refill.delivered(delivery.level, self._key(candidate))
        self.events.received(job_id, kwargs=str(delivery.headers.get("kwargsrepr", "")),
                             retries=message.attempts)

    async def _reject(self, delivery: Delivery, error: ValidationError) -> None:
        log.warning("dead-lettering a malformed message: %s", error)
        try:
            await self.courier.reject(delivery.headers, delivery.body, error)
        finally:
            self.broker.ack(delivery.epoch, delivery.tag)
            self.stats["dead_lettered"] += 1

    def _on_reset(self, epoch: int) -> None:
        """The connection dropped: its unacked messages went back to the broker."""
        for job_id, candidate in list(self._held.items()):
            if candidate.payload[0].epoch == epoch:
                self._queue.remove(job_id)
                del self._held[job_id]

    # -- admission ---------------------------------------------------------------------------

    async def _admission_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Nothing enters an engine that died: it would only fail there, one attempt more.
            if self._holding_off and self._room() > 0:
                self._resume_taking()
            while len(self._queue) and not self._stopping and self.fatal is None:
                room = self._room()
                if room <= 0:
                    break
                batch = self._next_batch(room)
                if not batch:
                    break  # only crash suspects held, and one is running: its end wakes us
                for candidate in batch:
                    del self._held[candidate.job_id]
                ids = [c.job_id for c in batch]
                self._admitting.update(ids)
                try:
                    for candidate in batch:
                        self._start_early(candidate)
                    decisions = await self.ledger.admit(ids)
                except asyncio.CancelledError:
                    self._abandon_early(batch)
                    raise
                except Exception as exc:  # Redis away: give the messages back, try later
                    self._abandon_early(batch)
                    # Before they go back: their redeliveries are not copies of jobs at hand.
                    self._admitting.difference_update(ids)
                    log.warning("admission failed (%r); handing %d messages back",
                                exc, len(batch))
                    for candidate in batch:
                        delivery = candidate.payload[0]
                        self.broker.requeue(delivery.epoch, delivery.tag)
                        self._queue.charge(candidate.tenant, -candidate.cost)
                    await asyncio.sleep(_REDIS_RETRY_SECONDS)
                    continue
                finally:
                    self._admitting.difference_update(ids)
                now = time.monotonic()
                if now - self._last_admission < self.settings.hold_seconds:
                    self._lean = False  # admitting often: not stuck
                self._last_admission = now
                for candidate, decision in zip(batch, decisions):
                    self._act(candidate, decision)
                if self._lean and self._held and self._room() <= 0 and not self._holding_off:
                    await self._hold_off()
            self._set_surge()

    def _start_early(self, candidate: Candidate[Any]) -> None:
        """Into the engine while its ADMIT is on the way, so the engine's first step overlaps
        the round trip to Redis (one job at a time, that round trip was ~1.4 ms of the ~6
        ms genq added to the engine's latency on session 4's machine). Nothing of it is
        published unless ADMIT says it runs here; any other answer aborts it in the engine,
        a step's work at most. Not a crash suspect: one must not reach the engine unless it
        is admitted."""
        delivery, message, rendered = candidate.payload
        if not crashes(delivery.headers):
            self._early[message.job_id] = EarlyStart(self.engine, self.progress, message,
                                                     prompt=rendered)

    def _abandon_early(self, batch: list[Candidate[Any]]) -> None:
        """These jobs will not run here (now): abort what started early, forget cancels."""
        for candidate in batch:
            self._cancelled.discard(candidate.job_id)
            if (early := self._early.pop(candidate.job_id, None)) is not None:
                early.abandon()
                self.stats["early_aborted"] += 1

    def _set_surge(self) -> None:
        surge = 0
        if not self._stopping and self.fatal is None:
            surge = surge_prefetch(self._room(), levels=self.settings.levels,
                                   window=self.settings.window, current=self._surge)
        if surge and not self._surge:
            self.stats["surges"] += 1
        self._surge = surge
        self.broker.surge(surge)

    def _room(self) -> int:
        return self.capacity - len(self._running) - len(self._admitting)

    # -- holding off: a full engine gives its window back ------------------------------------
    #
    # What a worker holds unstarted, no other worker can see. While its engine has room that
    # costs nothing (held jobs start within a broker round trip), but a worker whose engine
    # stays full (long jobs, a slow accelerator) would keep its window waiting while an idle
    # worker finds the queues empty. So after `hold_seconds` full without admitting anything
    # (a busy engine that frees slots all the time is not stuck) it hands the held jobs
    # back (they return to their queues' heads) and stops consuming; the first free slot
    # starts consuming again, and admission waits for the levels' first deliveries
    # (scheduler/refill.py) before choosing. A worker that held off stays lean (gives the
    # window back as soon as its engine is full again) until two admissions come less than
    # hold_seconds apart.

    async def _hold_off_loop(self) -> None:
        hold = self.settings.hold_seconds
        if hold <= 0:
            return
        while True:
            await asyncio.sleep(min(0.25, hold / 2))
            if (not self._holding_off and self._held and self._room() <= 0
                    and time.monotonic() - self._last_admission >= hold):
                await self._hold_off()

    async def _hold_off(self) -> None:
        entering = not self._lean
        self._holding_off = True
        self._lean = True
        # Stop deliveries first, then give back: given back while still consuming, a job
        # could come straight back to this worker.
        await asyncio.wrap_future(self.broker.take(False))
        given = 0
        for job_id, candidate in list(self._held.items()):
            delivery = candidate.payload[0]
            self._queue.remove(job_id)
            del self._held[job_id]
            self._refill.given_back(delivery.level, self._key(candidate))
            self.broker.requeue(delivery.epoch, delivery.tag)
            given += 1
        self.stats["held_off"] += 1
        # Once per slow stretch at INFO; while it lasts it happens at every admission.
        log.log(logging.INFO if entering else logging.DEBUG,
                "engine full, nothing admitted for %.1f s: gave back %d held jobs, not "
                "consuming until a slot frees", self.settings.hold_seconds, given)
        assert self._wake is not None
        self._wake.set()  # a slot may have freed meanwhile

    def _resume_taking(self) -> None:
        self._holding_off = False
        now = time.monotonic()
        for level in range(self.settings.levels):
            self._refill.expect(level, self.settings.window, now)
        self.broker.take(True)

    def _key(self, candidate: Candidate[Any]) -> float:
        return static_key(candidate.priority, candidate.enqueued_at,
                          alpha=self.settings.alpha, beta=self.settings.beta)

    def _held_back(self, candidate: Candidate[Any]) -> bool:
        """Whether a better job may be a broker round trip away (scheduler/refill.py); if
        so, admission looks again when that refill is due."""
        now = time.monotonic()
        due = self._refill.held_back(self._key(candidate), now)
        if due is None:
            return False
        if self._refill_timer is not None:
            self._refill_timer.cancel()
        assert self._wake is not None
        self._refill_timer = asyncio.get_running_loop().call_later(due - now, self._wake.set)
        return True

    def _next_batch(self, room: int) -> list[Candidate[Any]]:
        """Up to `room` best candidates, but never two crash suspects in the engine at once:
        a second suspect waits (it keeps its place) without holding up the jobs behind it;
        and none while a better job may be about to arrive (`_held_back`)."""
        suspect_in = any(r.crashes for r in self._running.values())
        batch: list[Candidate[Any]] = []
        waiting: list[Candidate[Any]] = []
        while len(batch) < room and len(self._queue):
            if self._held_back(self._queue.peek()):
                break
            candidate = self._queue.pop()
            self._refill.taken(candidate.payload[0].level, time.monotonic())
            if crashes(candidate.payload[0].headers):
                if suspect_in:
                    waiting.append(candidate)
                    continue
                suspect_in = True
            batch.append(candidate)
        for candidate in waiting:  # back in the queue, its tenant's admission charge refunded
            self._queue.charge(candidate.tenant, -candidate.cost)
            self._queue.add(candidate)
        return batch

    def _act(self, candidate: Candidate[Any], decision: str) -> None:
        delivery, message, rendered = candidate.payload
        job_id = message.job_id
        cancelled = job_id in self._cancelled
        if decision != "running" or cancelled:
            self._abandon_early([candidate])  # forgets the cancel too
        early = self._early.pop(job_id, None)
        if decision == "running" and cancelled:
            # Cancelled after ADMIT ran in Redis, before its reply came back: the cancel
            # found the job running but not yet here (`_on_cancel`).
            asyncio.ensure_future(self._end(
                job_id, JobState.CANCELLED, error="cancelled by the client while running"))
            self.events.revoked(job_id)
        elif decision == "running":
            running = _Running(message, cost=candidate.cost,
                               crashes=crashes(delivery.headers), prompt=rendered,
                               early=early.admit() if early is not None else None)
            self._running[job_id] = running
            running.task = asyncio.create_task(self._run(running), name=job_id)
            self.stats["admitted"] += 1
            self.events.started(job_id)
        elif decision == "expired":
            asyncio.ensure_future(self._end(
                job_id, JobState.EXPIRED, error="deadline passed before the job started"))
            self.events.revoked(job_id, expired=True)
        elif decision == "missing":
            asyncio.ensure_future(self.courier.dead_letter(
                delivery.headers, delivery.body, attempts=message.attempts, job_id=job_id,
                reason="no job record in Redis (expired, or not submitted through genq)"))
            self.events.failed(job_id, error="no job record")
        elif decision in (JobState.CANCELLED.value, JobState.EXPIRED.value):
            self.events.revoked(job_id, expired=decision == JobState.EXPIRED.value)
        if decision != "running" or cancelled:  # it never ran: its tenant's charge back
            self._queue.charge(candidate.tenant, -candidate.cost)
        # "leased" (a live worker runs it) and terminal states: this copy is surplus.
        # Ack only now: ADMIT has recorded the job, so the message is no longer its only trace.
        self.broker.ack(delivery.epoch, delivery.tag)

    # -- running one job ---------------------------------------------------------------------

    async def _run(self, running: _Running) -> None:
        message = running.message
        job_id = message.job_id
        attempt = message.attempts + 1
        try:
            generation = await (running.early or generate(self.engine, self.progress,
                                                          message, prompt=running.prompt))
        except asyncio.CancelledError:
            if running.cancel_requested:
                await self._end(job_id, JobState.CANCELLED,
                                error="cancelled by the client while running")
                self.events.revoked(job_id)
            elif self.engine.dead:  # cancelled at shutdown after the engine died under it
                await self._crashed(running, EngineDeadError("the engine died"))
            else:
                await self.courier.hand_back(message, attempts=attempt)
                self.stats["handed_back"] += 1
        except RequestRejectedError as exc:
            await self._fail(running, f"rejected by the engine: {exc}")
        except EngineDeadError as exc:
            await self._crashed(running, exc)
        except Exception as exc:  # a passing engine error: retry, within bounds
            if self.engine.dead:
                await self._crashed(running, exc)
            elif attempt >= self.settings.max_attempts:
                await self._fail(running, f"failed after {attempt} attempts: {exc!r}",
                                 dead_letter=True)
            else:
                log.warning("job %s: attempt %d failed (%r); retrying", job_id, attempt, exc)
                await self.courier.hand_back(message, attempts=attempt)
        else:
            await self._succeed(running, generation)
        finally:
            self._running.pop(job_id, None)
            assert self._wake is not None
            self._wake.set()

    async def _finish(self, job_id: str, state: JobState, **kwargs: Any) -> str:
        """Store a job's end, riding out a Redis restart. If Redis stays away too long the
        result is dropped here and the job's expiring lease has it run again elsewhere."""
        deadline = time.monotonic() + _FINISH_RETRY_SECONDS
        while True:
            try:
                return await self.ledger.finish(job_id, state, **kwargs)
            except Exception as exc:
                if time.monotonic() > deadline:
                    log.error("job %s: result not stored (%r); its lease will expire", job_id, exc)
                    return "unstored"
                await asyncio.sleep(_REDIS_RETRY_SECONDS)

    async def _succeed(self, running: _Running, generation: Generation) -> None:
        job_id = running.message.job_id
        self._queue.charge(running.message.spec.tenant or "default",
                           generation.prompt_tokens + generation.completion_tokens - running.cost)
        result = {
            "text": generation.text,
            "finish_reason": generation.finish_reason,
            "usage": {"prompt_tokens": generation.prompt_tokens,
                      "completion_tokens": generation.completion_tokens},
            "model": self.model,
        }
        await self._finish(job_id, JobState.SUCCEEDED, result=result)
        self.stats["succeeded"] += 1
        self.events.succeeded(job_id, result=f"{generation.completion_tokens} tokens",
                              runtime=time.monotonic() - running.started)

    async def _fail(self, running: _Running, error: str, *, dead_letter: bool = False) -> None:
        message = running.message
        await self._finish(message.job_id, JobState.FAILED, error=error)
        self.stats["failed"] += 1
        self.events.failed(message.job_id, error=error)
        if dead_letter:
            headers, body = encode_task(message.spec, job_id=message.job_id,
                                        enqueued_at=message.enqueued_at,
                                        deadline_at=message.deadline_at,
                                        attempts=message.attempts + 1)
            await self.courier.dead_letter(headers, body, reason=error,
                                           attempts=message.attempts + 1, job_id=message.job_id)
            self.stats["dead_lettered"] += 1

    async def _end(self, job_id: str, state: JobState, *, error: str) -> None:
        """Record a job cancelled or expired. If identical jobs were waiting on its result
        (single flight), one of them now runs in its place: publish it at once rather than
        at the next reaper pass (its lease is already expired, so `reap` takes it)."""
        if await self._finish(job_id, state, error=error) == "promoted":
            try:
                self.stats["reaped"] += await self.courier.reap()
            except Exception:  # the lease loop's reaper tries again
                log.warning("publishing a promoted follower failed", exc_info=True)

    async def _crashed(self, running: _Running, exc: BaseException) -> None:
        """The engine died with this job in it. Stop taking work; hand the job back as a
        crash suspect, or, if this was its last attempt, fail and dead-letter it: a job that
        kills every engine it runs in must not go round the fleet forever."""
        self._die(exc)
        message = running.message
        attempt = message.attempts + 1
        if attempt < self.settings.max_attempts:
            await self.courier.hand_back(message, attempts=attempt, crashed=True)
            self.stats["handed_back"] += 1
            return
        deaths = running.crashes + 1
        reason = f"the engine died while running it {deaths} times"
        if deaths != attempt:
            reason += f" (attempt {attempt} of {self.settings.max_attempts})"
        await self._fail(running, reason, dead_letter=True)

    def _die(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
            assert self._stop is not None
            self._stop.set()

    # -- leases and cancellation -------------------------------------------------------------

    async def _lease_loop(self) -> None:
        # Renew well before expiry (a third of the lease) so one slow round trip is harmless.
        period = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self.ledger.renew(list(self._running))
                self.stats["reaped"] += await self.courier.reap()
            except Exception:  # Redis away: the next round tries again
                log.exception("lease renewal / reaping failed")

    async def _heartbeat_loop(self) -> None:
        """Publish what this worker is doing to Redis (`genq:worker:<name>`), so clients,
        `genq status` and tests can see it without asking Celery."""
        key = names.worker_stats_key(self.hostname)
        while True:
            try:
                snapshot = {"model": self.model, "capacity": self.capacity,
                            "running": len(self._running), "held": len(self._held),
                            "pid": os.getpid(), "at": time.time(), **self.stats,
                            **self.engine.counters.snapshot(), **self.engine.describe()}
                pids = self.engine.core_pids()
                # Where the worker and its engine core run: for operators and `genq chaos`.
                snapshot.update(host=socket.gethostname(), engine_pid=pids[0] if pids else "")
                await self.ledger.redis.hset(key, mapping=snapshot)
                await self.ledger.redis.expire(key, _HEARTBEAT_TTL)
            except Exception:  # Redis away: the next beat tries again
                log.warning("heartbeat to Redis failed", exc_info=True)
            if self.engine.dead:  # a dead engine core that no running job has noticed yet
                self._die(EngineDeadError("the engine core process is gone"))
            await asyncio.sleep(_HEARTBEAT_PERIOD)

    async def _cancel_listener(self) -> None:
        while True:
            try:
                pubsub = self.ledger.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(names.CANCEL_CHANNEL)
                async for item in pubsub.listen():
                    self._on_cancel(str(item["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cancel listener lost Redis; resubscribing")
                await asyncio.sleep(1.0)

    def _on_cancel(self, job_id: str) -> None:
        running = self._running.get(job_id)
        if running is not None and running.task is not None:
            running.cancel_requested = True
            running.task.cancel()  # AsyncLLM.generate aborts the request in the engine
        elif job_id in self._admitting:
            self._cancelled.add(job_id)  # ADMIT's reply is on its way: `_act` ends it

