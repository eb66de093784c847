"""Putting jobs back: hand-backs, the lease reaper, and the dead-letter queue.

Every path that gives a job back republishes its message with the ORIGINAL enqueue time, so
the job keeps its age, and so its score, when it returns.

Attempts: a job's record counts every start (ADMIT), and every republish carries that count.
A job started `max_attempts` times whose engine dies under it again (workers/running.py), or
whose worker stops renewing its lease again (the reaper, here), is failed and dead-lettered
instead of coming back: a job that crashes whatever runs it must not take the fleet down
forever.

Crash suspects: a job running when its engine died carries the number of such deaths in
its message (genq.protocol.CRASHES_HEADER). Every job in the batch dies with the engine, and
only one of them may be to blame, so a worker never runs two suspects at once: a poison job
then takes each innocent bystander down at most once, and the bystanders never reach
max_attempts on its account."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from genq import names
from genq.errors import ValidationError
from genq.protocol import (
    CRASHES_HEADER,
    TaskMessage,
    crashes,
    dead_letter_headers,
    message_job_id,
)
from genq.schema import JobState
from workers.broker import BrokerLink
from workers.ledger import Ledger

# CRASHES_HEADER and crashes live in genq.protocol; named here too for the worker's callers.
__all__ = ["CRASHES_HEADER", "Courier", "crashes"]

log = logging.getLogger(__name__)

_PUBLISH_TIMEOUT = 30.0


class Courier:
    def __init__(
        self, broker: BrokerLink, ledger: Ledger, *, model: str, max_attempts: int
    ) -> None:
        self._broker = broker
        self._ledger = ledger
        self._model = model
        self._max_attempts = max_attempts

    async def _publish(
        self, exchange: str, routing_key: str, headers: dict[str, Any], body: bytes, job_id: str
    ) -> None:
        # Bounded: a broker that never confirms must not hold a shutdown forever (the job's
        # lease then expires and a reaper republishes it).
        await asyncio.wait_for(
            asyncio.wrap_future(
                self._broker.publish(exchange, routing_key, headers, body, job_id=job_id)
            ),
            _PUBLISH_TIMEOUT,
        )

    async def republish(self, message: TaskMessage, *, attempts: int, crashes: int = 0) -> None:
        headers, body = message.encode(attempts=attempts)
        if crashes:
            headers[CRASHES_HEADER] = crashes
        await self._publish(
            names.EXCHANGE,
            names.level_routing_key(message.spec.model, message.spec.priority),
            headers,
            body,
            message.job_id,
        )

    async def hand_back(
        self, message: TaskMessage, *, attempts: int, crashed: bool = False
    ) -> None:
        """Give a job this worker admitted back to its queue (it will run again).
        `crashed`: it was running when the engine died, so it comes back a crash suspect."""
        outcome, lease, crash_count = await self._ledger.hand_back(message.job_id, crashed=crashed)
        if outcome != "queued":
            return  # it ended meanwhile (cancelled, say): nothing to give back
        await self.republish(message, attempts=attempts, crashes=crash_count)
        await self._ledger.release(message.job_id, lease)

    async def reap(self) -> int:
        """Republish jobs whose lease expired (their worker died or hung). Any worker may
        reap any job of its model; each expired lease is claimed by one reaper."""
        count = 0
        for job_id, lease in await self._ledger.expired_leases(self._model):
            raw = await self._ledger.record(job_id)
            if not raw or raw.get("state") not in (JobState.QUEUED.value, JobState.RUNNING.value):
                await self._ledger.release(job_id, lease)
                continue
            try:
                message = TaskMessage.from_record(job_id, raw)
            except (KeyError, ValueError) as exc:
                await self._ledger.finish(
                    job_id, JobState.FAILED, error=f"record unreadable after its worker died: {exc}"
                )
                continue
            if raw["state"] == JobState.RUNNING.value and message.attempts >= self._max_attempts:
                # Its worker died under it every time it ran: maybe it is what kills them.
                await self.give_up(
                    message,
                    attempts=message.attempts,
                    reason=f"its lease expired on attempt {message.attempts} "
                    f"of {self._max_attempts} (its worker died or hung "
                    f"while running it)",
                )
                continue
            await self.republish(
                message, attempts=message.attempts, crashes=int(raw.get("crashes") or 0)
            )
            await self._ledger.release(job_id, lease)
            log.warning("job %s: lease expired; republished (attempt %d)", job_id, message.attempts)
            count += 1
        return count

    async def give_up(self, message: TaskMessage, *, attempts: int, reason: str) -> str:
        """Fail a job for good and keep a copy in `<model>.dead` with why and how many
        attempts. The record first: it is what clients wait on. Returns FINISH's outcome
        (not `ok`: the job had already ended, and nothing is dead-lettered)."""
        outcome = await self._ledger.finish(message.job_id, JobState.FAILED, error=reason)
        if outcome not in ("ok", "promoted"):
            return outcome
        headers, body = message.encode(attempts=attempts)
        await self.dead_letter(
            headers, body, reason=reason, attempts=attempts, job_id=message.job_id
        )
        log.error("job %s: failed and dead-lettered: %s", message.job_id, reason)
        return outcome

    async def dead_letter(
        self,
        headers: dict[str, Any],
        body: bytes,
        *,
        reason: str,
        attempts: int,
        job_id: str | None,
    ) -> None:
        """Keep a copy of a message that can't run in `<model>.dead`, with why."""
        dead_headers = dead_letter_headers(headers, reason=reason, attempts=attempts)
        await self._publish(
            names.DEAD_EXCHANGE,
            names.dead_routing_key(self._model),
            dead_headers,
            body,
            job_id or "",
        )

    async def reject(self, headers: dict[str, Any], body: bytes, error: ValidationError) -> None:
        """A message that is not a valid genq job: dead-letter it; fail its record if any."""
        job_id = message_job_id(headers)
        reason = f"malformed message: {error}"
        await self.dead_letter(headers, body, reason=reason, attempts=0, job_id=job_id)
        if job_id:
            await self._ledger.mark_failed_if_known(job_id, reason)
