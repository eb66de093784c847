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
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

from genq import names
from genq.errors import EngineDeadError
from genq.settings import WorkerSettings
from scheduler import create_admission_queue
from scheduler.refill import RefillWatch
from workers.admission import Admission
from workers.broker import BrokerLink
from workers.courier import Courier
from workers.credit import Credit
from workers.engine import Engine
from workers.events import TaskEvents
from workers.faults import REDIS_AWAY
from workers.jobs import JobTable, Phase
from workers.ledger import Ledger
from workers.observers import CeleryEvents, Observers, Stats
from workers.progress import Progress
from workers.running import Runner

__all__ = ["GpuConsumer"]

log = logging.getLogger(__name__)

# A worker's stats key outlives a few missed beats, then disappears with a dead worker.
_HEARTBEAT_PERIOD = 1.0
_HEARTBEAT_TTL = 5
# After the engine died, running jobs see it at once (EngineDeadError) and hand themselves
# back as crash suspects; the ones that don't within this long are cancelled and handed back.
_DEAD_ENGINE_GRACE = 10.0
# Stopping waits this long for cancelled tasks (hand-backs publish within 30 s), then goes
# on: redis-py's asyncio client can swallow a cancellation that lands mid-command, and a
# task that never ends must not keep a dead worker from exiting.
_CANCEL_WAIT_SECONDS = 45.0


class GpuConsumer:
    """Lifecycle and wiring: the loop thread, the engine, and the parts that run jobs
    (admission.py, credit.py, running.py), the jobs table they share (jobs.py), and the
    worker's background loops (leases and reaping, cancels, heartbeat)."""

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        engine_args: Any,
        served_model: str,
        app: Celery,
        hostname: str,
        on_fatal: Callable[[BaseException], None] = lambda _error: None,
    ) -> None:
        self.settings = settings
        self._on_fatal = on_fatal
        """Called once the loop ended because the engine died (the bootstep exits)."""
        self.model = served_model
        self.hostname = hostname
        self._engine_args = engine_args
        self._app = app
        self.jobs = JobTable()
        self.stats = Stats()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        """Shutting down: nothing more is admitted; what is held goes back to the broker."""
        self._thread = threading.Thread(target=self._thread_main, name="genq-gpu", daemon=True)
        self.fatal: BaseException | None = None

    # -- lifecycle, called from Celery's thread ----------------------------------------------

    def start(self, timeout: float = 900.0) -> None:
        """Start the engine and begin consuming; returns once jobs can run."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"engine did not start within {timeout} s")
        if self._startup_error is not None:
            raise RuntimeError(
                f"engine failed to start: {self._startup_error}"
            ) from self._startup_error

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
        except BaseException as exc:  # reported to start(), or logged
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                log.exception("GPU consumer crashed")
                self.fatal = exc
        if self.fatal is not None:
            self._on_fatal(self.fatal)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        wake = asyncio.Event()
        settings = self.settings
        self.engine = Engine.start(self._engine_args)
        self.ledger = Ledger(
            settings.redis_url,
            settings,
            job_ttl=settings.job_ttl,
            lease_seconds=settings.lease_seconds,
            worker=self.hostname,
        )
        self.progress = Progress(self.ledger.redis)
        self.events = TaskEvents(self._app, self.hostname)
        self.events.start()
        observers = Observers(self.stats, CeleryEvents(self.events))
        queue = create_admission_queue(
            settings.policy,
            fair_levels=settings.fair_levels,
            alpha=settings.alpha,
            beta=settings.beta,
        )
        refill = RefillWatch(settings.refill_wait)
        self.broker = BrokerLink(
            settings.broker_url,
            settings,
            model=self.model,
            levels=settings.levels,
            window=settings.window,
            loop=self._loop,
            on_delivery=lambda d: self.admission.on_delivery(d),
            on_reset=lambda epoch: self.admission.on_reset(epoch),
        )
        self.courier = Courier(
            self.broker, self.ledger, model=self.model, max_attempts=settings.max_attempts
        )
        self.credit = Credit(
            settings=settings,
            capacity=self.engine.max_num_seqs + settings.admit_headroom,
            jobs=self.jobs,
            queue=queue,
            refill=refill,
            broker=self.broker,
            observers=observers,
            wake=wake,
            accepting=self._accepting,
        )
        self.runner = Runner(
            settings=settings,
            model=self.model,
            jobs=self.jobs,
            queue=queue,
            engine=self.engine,
            progress=self.progress,
            ledger=self.ledger,
            courier=self.courier,
            observers=observers,
            wake=wake,
            die=self._die,
        )
        self.admission = Admission(
            settings=settings,
            jobs=self.jobs,
            queue=queue,
            refill=refill,
            credit=self.credit,
            runner=self.runner,
            ledger=self.ledger,
            engine=self.engine,
            progress=self.progress,
            broker=self.broker,
            courier=self.courier,
            observers=observers,
            wake=wake,
            accepting=self._accepting,
        )
        self.broker.start()
        background = [
            asyncio.create_task(self.admission.run(), name="admission"),
            asyncio.create_task(self._lease_loop(), name="leases"),
            asyncio.create_task(self._cancel_listener(), name="cancels"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self.credit.run(), name="hold-off"),
        ]
        self._ready.set()
        log.info("GPU consumer ready: model %s, %s", self.model, self.engine.describe())
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(background)

    def _accepting(self) -> bool:
        """Whether anything more may enter the engine: not while stopping, and nothing
        enters an engine that died (it would only fail there, one attempt more)."""
        return not self._stopping and self.fatal is None

    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        self.broker.pause()
        self._stopping = True
        grace = _DEAD_ENGINE_GRACE if self.fatal is not None else self.settings.grace_period
        deadline = time.monotonic() + grace
        # An admission already sent to Redis counts as running: cancelled mid-way, it would
        # leave its jobs marked running with nobody running them.
        while (
            self.jobs.count(Phase.RUNNING) or self.jobs.count(Phase.ADMITTING)
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = [job.task for job in self.jobs.in_phase(Phase.RUNNING) if job.task is not None]
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
        with contextlib.suppress(*REDIS_AWAY):  # away: the key expires by itself
            await self.ledger.redis.delete(names.worker_stats_key(self.hostname))
        await self.ledger.close()
        self.engine.shutdown()
        log.info("GPU consumer stopped: %s", self.stats.snapshot())

    # -- leases and cancellation -------------------------------------------------------------

    async def _lease_loop(self) -> None:
        # Renew well before expiry (a third of the lease) so one slow round trip is harmless.
        period = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self.ledger.renew(self.runner.running_ids())
                self.stats.reaped(await self.courier.reap())
            except REDIS_AWAY as exc:  # the next round tries again
                log.warning("lease renewal / reaping failed: %r", exc)
            except Exception:  # a bug: logged, and the loop goes on (leases must be renewed)
                log.exception("lease renewal / reaping failed")

    async def _heartbeat_loop(self) -> None:
        """Publish what this worker is doing to Redis (`genq:worker:<name>`), so clients,
        `genq status` and tests can see it without asking Celery."""
        key = names.worker_stats_key(self.hostname)
        while True:
            try:
                snapshot: dict[Any, Any] = {
                    "model": self.model,
                    "capacity": self.credit.capacity,
                    "running": self.jobs.count(Phase.RUNNING),
                    "held": self.jobs.count(Phase.HELD),
                    "pid": os.getpid(),
                    "at": time.time(),
                    **self.stats.snapshot(),
                    **self.engine.counters.snapshot(),
                    **self.engine.describe(),
                }
                pids = self.engine.core_pids()
                # Where the worker and its engine core run: for operators and `genq chaos`.
                snapshot.update(host=socket.gethostname(), engine_pid=pids[0] if pids else "")
                await self.ledger.redis.hset(key, mapping=snapshot)
                await self.ledger.redis.expire(key, _HEARTBEAT_TTL)
            except REDIS_AWAY as exc:  # the next beat tries again
                log.warning("heartbeat to Redis failed: %r", exc)
            except Exception:  # a bug: logged, and the beat goes on
                log.exception("heartbeat failed")
            if self.engine.dead:  # a dead engine core that no running job has noticed yet
                self._die(EngineDeadError("the engine core process is gone"))
            await asyncio.sleep(_HEARTBEAT_PERIOD)

    async def _cancel_listener(self) -> None:
        while True:
            try:
                pubsub = self.ledger.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(names.CANCEL_CHANNEL)
                async for item in pubsub.listen():
                    self.runner.cancel(str(item["data"]))
            except REDIS_AWAY as exc:
                log.warning("cancel listener lost Redis (%r); resubscribing", exc)
                await asyncio.sleep(1.0)
            except Exception:  # a bug: logged, and the listener goes on
                log.exception("cancel listener failed; resubscribing")
                await asyncio.sleep(1.0)

    def _die(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
            assert self._stop is not None
            self._stop.set()
