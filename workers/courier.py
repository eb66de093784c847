"""Putting jobs back: hand-backs, the lease reaper, and the dead-letter queue.

Every path that gives a job back republishes its message with the ORIGINAL enqueue time, so
the job keeps its age, and so its score, when it returns."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from genq import names
from genq.errors import ValidationError
from genq.protocol import TaskMessage, encode_task
from genq.schema import JobSpec, JobState
from workers.broker import BrokerLink
from workers.ledger import Ledger

__all__ = ["Courier"]

log = logging.getLogger(__name__)

_PUBLISH_TIMEOUT = 30.0


class Courier:
    def __init__(self, broker: BrokerLink, ledger: Ledger, *, model: str) -> None:
        self._broker = broker
        self._ledger = ledger
        self._model = model

    async def _publish(self, exchange: str, routing_key: str, headers: dict[str, Any],
                       body: bytes, job_id: str) -> None:
        # Bounded: a broker that never confirms must not hold a shutdown forever (the job's
        # lease then expires and a reaper republishes it).
        await asyncio.wait_for(asyncio.wrap_future(
            self._broker.publish(exchange, routing_key, headers, body, job_id=job_id)
        ), _PUBLISH_TIMEOUT)

    async def republish(self, message: TaskMessage, *, attempts: int) -> None:
        headers, body = encode_task(
            message.spec, job_id=message.job_id, enqueued_at=message.enqueued_at,
            deadline_at=message.deadline_at, attempts=attempts,
        )
        await self._publish(names.EXCHANGE,
                            names.level_routing_key(message.spec.model, message.spec.priority),
                            headers, body, message.job_id)

    async def hand_back(self, message: TaskMessage, *, attempts: int) -> None:
        """Give a job this worker admitted back to its queue (it will run again)."""
        outcome, lease = await self._ledger.hand_back(message.job_id)
        if outcome != "queued":
            return  # it ended meanwhile (cancelled, say): nothing to give back
        await self.republish(message, attempts=attempts)
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
                message = TaskMessage(
                    job_id=job_id,
                    spec=JobSpec.model_validate_json(raw["spec"]),
                    enqueued_at=float(raw["enqueued_at"]),
                    deadline_at=float(raw["deadline_at"]) if raw.get("deadline_at") else None,
                    attempts=int(raw.get("attempts", 0)),
                )
            except (KeyError, ValueError) as exc:
                await self._ledger.finish(job_id, JobState.FAILED,
                                          error=f"record unreadable after its worker died: {exc}")
                continue
            await self.republish(message, attempts=message.attempts)
            await self._ledger.release(job_id, lease)
            log.warning("job %s: lease expired; republished (attempt %d)",
                        job_id, message.attempts)
            count += 1
        return count

    async def dead_letter(self, headers: dict[str, Any], body: bytes, *, reason: str,
                          attempts: int, job_id: str | None) -> None:
        """Keep a copy of a message that can't run in `<model>.dead`, with why."""
        dead_headers = {**headers, "x-genq-reason": reason, "x-genq-attempts": attempts}
        await self._publish(names.DEAD_EXCHANGE, names.dead_routing_key(self._model),
                            dead_headers, body, job_id or "")

    async def reject(self, headers: dict[str, Any], body: bytes, error: ValidationError) -> None:
        """A message that is not a valid genq job: dead-letter it; fail its record if any."""
        job_id = headers.get("id") if isinstance(headers.get("id"), str) else None
        reason = f"malformed message: {error}"
        await self.dead_letter(headers, body, reason=reason, attempts=0, job_id=job_id)
        if job_id:
            await self._ledger.mark_failed_if_known(job_id, reason)
