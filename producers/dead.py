"""`genq dead list | requeue`: look at a model's dead-letter queue and give a job another go.

Listing takes messages without acking and lets them go back (the queue is left as it was);
requeueing republishes the job from its record at its original level and enqueue time, with
its attempts reset, and only then acks the dead copy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pika

from genq import names
from genq.errors import NotFoundError
from genq.protocol import dead_letter_attempts, dead_letter_reason, message_job_id
from genq.tls import pika_parameters
from producers.client import Client
from producers.publisher import OutgoingJob

__all__ = ["DeadLetter", "list_dead", "requeue_dead"]

# Messages inspected per call: a dead-letter queue is for reading, not for draining.
_SCAN_LIMIT = 10_000


@dataclass(frozen=True)
class DeadLetter:
    job_id: str | None
    reason: str
    attempts: int


def _scan(client: Client, model: str) -> tuple[Any, Any, list[tuple[int, DeadLetter]]]:
    conn = pika.BlockingConnection(pika_parameters(client.settings.broker_url, client.settings))
    channel = conn.channel()
    found = []
    for _ in range(_SCAN_LIMIT):
        method, props, _body = channel.basic_get(names.dead_queue(model), auto_ack=False)
        if method is None:
            break
        headers = props.headers or {}
        found.append(
            (
                method.delivery_tag,
                DeadLetter(
                    message_job_id(headers),
                    dead_letter_reason(headers),
                    dead_letter_attempts(headers),
                ),
            )
        )
    return conn, channel, found


def list_dead(client: Client, model: str) -> list[DeadLetter]:
    conn, _channel, found = _scan(client, model)
    conn.close()  # nothing acked: every message goes back
    return [letter for _tag, letter in found]


def requeue_dead(client: Client, model: str, job_id: str) -> None:
    conn, channel, found = _scan(client, model)
    try:
        tag = next((t for t, letter in found if letter.job_id == job_id), None)
        if tag is None:
            raise NotFoundError(f"job {job_id}: not in {names.dead_queue(model)}")
        client.store.revive(job_id)
        message = client.store.task_message(job_id)
        headers, body = message.encode(attempts=0)
        client.publisher.publish([OutgoingJob(job_id, model, message.spec.priority, headers, body)])
        channel.basic_ack(tag)
    finally:
        conn.close()
