"""Credit: how much the worker takes from the broker, and when it gives work back.

What a worker holds unstarted, no other worker can see. While its engine has room that
costs nothing (held jobs start within a broker round trip), but a worker whose engine stays
full (long jobs, a slow accelerator) would keep its window waiting while an idle worker
finds the queues empty. So after `hold_seconds` full without admitting anything (a busy
engine that frees slots all the time is not stuck) it hands the held jobs back (they return
to their queues' heads) and stops consuming; the first free slot starts consuming again,
and admission waits for the levels' first deliveries (scheduler/refill.py) before choosing.
A worker that held off stays lean (gives the window back as soon as its engine is full
again) until two admissions come less than hold_seconds apart.

An empty engine takes more than its window (a surge, scheduler/surge.py), so a burst fills
it in one broker round trip rather than a window at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from genq.settings import WorkerSettings
from scheduler import AdmissionQueue
from scheduler.refill import RefillWatch
from scheduler.surge import surge_prefetch
from workers.broker import BrokerLink
from workers.jobs import JobTable, Phase, score_key
from workers.observers import Observer

__all__ = ["Credit"]

log = logging.getLogger(__name__)


class Credit:
    def __init__(
        self,
        *,
        settings: WorkerSettings,
        capacity: int,
        jobs: JobTable,
        queue: AdmissionQueue,
        refill: RefillWatch,
        broker: BrokerLink,
        observers: Observer,
        wake: asyncio.Event,
        accepting: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self.capacity = capacity
        self._jobs = jobs
        self._queue = queue
        self._refill = refill
        self._broker = broker
        self._observers = observers
        self._wake = wake
        self._accepting = accepting
        self._last_admission = time.monotonic()
        self._holding_off = False
        self._lean = False
        """Held off before and still slow: give the window back as soon as the engine is
        full again, not after another hold_seconds."""
        self._surge = 0
        """The broker's surge prefetch: 0 but while the engine is empty."""

    def room(self) -> int:
        """Jobs the engine can take now: what is running or being admitted counts."""
        return self.capacity - self._jobs.count(Phase.RUNNING) - self._jobs.count(Phase.ADMITTING)

    def admitted(self) -> None:
        """An admission went through: a worker admitting often is not stuck."""
        now = time.monotonic()
        if now - self._last_admission < self._settings.hold_seconds:
            self._lean = False
        self._last_admission = now

    def set_surge(self) -> None:
        surge = 0
        if self._accepting():
            surge = surge_prefetch(
                self.room(),
                levels=self._settings.levels,
                window=self._settings.window,
                current=self._surge,
            )
        if surge and not self._surge:
            self._observers.surged()
        self._surge = surge
        self._broker.surge(surge)

    # -- holding off -------------------------------------------------------------------------

    async def run(self) -> None:
        """Hold off once the engine stayed full `hold_seconds` without admitting."""
        hold = self._settings.hold_seconds
        if hold <= 0:
            return
        while True:
            await asyncio.sleep(min(0.25, hold / 2))
            if (
                not self._holding_off
                and self._jobs.count(Phase.HELD)
                and self.room() <= 0
                and time.monotonic() - self._last_admission >= hold
            ):
                await self._hold_off()

    async def hold_off_if_lean(self) -> None:
        if (
            self._lean
            and self._jobs.count(Phase.HELD)
            and self.room() <= 0
            and not self._holding_off
        ):
            await self._hold_off()

    def resume_if_room(self) -> None:
        """Consume again once a slot freed after holding off."""
        if not self._holding_off or self.room() <= 0:
            return
        self._holding_off = False
        now = time.monotonic()
        for level in range(self._settings.levels):
            self._refill.expect(level, self._settings.window, now)
        self._broker.take(True)

    async def _hold_off(self) -> None:
        entering = not self._lean
        self._holding_off = True
        self._lean = True
        # Stop deliveries first, then give back: given back while still consuming, a job
        # could come straight back to this worker.
        await asyncio.wrap_future(self._broker.take(False))
        given = 0
        for job in self._jobs.in_phase(Phase.HELD):
            candidate = self._queue.remove(job.job_id)
            self._jobs.remove(job)
            if candidate is not None:
                self._refill.given_back(job.delivery.level, score_key(candidate, self._settings))
            self._broker.requeue(job.delivery.epoch, job.delivery.tag)
            given += 1
        self._observers.held_off(given)
        # Once per slow stretch at INFO; while it lasts it happens at every admission.
        log.log(
            logging.INFO if entering else logging.DEBUG,
            "engine full, nothing admitted for %.1f s: gave back %d held jobs, not "
            "consuming until a slot frees",
            self._settings.hold_seconds,
            given,
        )
        self._wake.set()  # a slot may have freed meanwhile
