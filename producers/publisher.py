"""Publishing job messages to RabbitMQ with publisher confirms.

A publish counts only once the broker has confirmed it: without confirms a producer whose
connection dropped was seen to lose a fifth of a batch without a word. Here an unconfirmed
publish is retried on a fresh connection and, if that fails too, raised as `PublishError`
carrying how many of the batch were confirmed. A retried publish may reach the broker twice;
the worker's admission (a Lua script on the job record) runs a job once whatever the copies."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from genq import names
from genq.errors import PublishError
from genq.protocol import CONTENT_TYPE
from genq.topology import declare_model

__all__ = ["OutgoingJob", "Publisher"]

# Reconnect attempts for one batch before giving up: enough to ride out a broker restart's
# first refused connections, few enough that a caller learns of an outage in seconds.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class OutgoingJob:
    job_id: str
    model: str
    level: int
    headers: dict[str, Any]
    body: bytes


class Publisher:
    def __init__(self, url: str, *, levels: int, timeout: float) -> None:
        self._params = pika.URLParameters(url)
        self._params.blocked_connection_timeout = timeout
        self._params.socket_timeout = timeout
        self._params.connection_attempts = 1
        self._levels = levels
        self._lock = threading.Lock()  # pika connections are not thread-safe
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._declared: set[str] = set()

    def publish(self, jobs: Sequence[OutgoingJob]) -> None:
        """Publish every job, confirmed, or raise `PublishError` with `.confirmed` set."""
        with self._lock:
            done = 0
            last_error: Exception | None = None
            for _attempt in range(_ATTEMPTS):
                try:
                    channel = self._ensure_channel()
                    for job in jobs[done:]:
                        self._publish_one(channel, job)
                        done += 1
                    return
                except (pika.exceptions.AMQPError, OSError) as exc:
                    last_error = exc
                    self._reset()
            error = PublishError(
                f"broker did not confirm {len(jobs) - done} of {len(jobs)} jobs: {last_error!r}"
            )
            error.confirmed = done  # type: ignore[attr-defined]
            raise error

    def _publish_one(self, channel: Any, job: OutgoingJob) -> None:
        if job.model not in self._declared:
            declare_model(channel, job.model, self._levels)
            self._declared.add(job.model)
        channel.basic_publish(
            exchange=names.EXCHANGE,
            routing_key=names.level_routing_key(job.model, job.level),
            body=job.body,
            properties=pika.BasicProperties(
                content_type=CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=pika.DeliveryMode.Persistent,
                correlation_id=job.job_id,
                headers=job.headers,
            ),
            # An unroutable message (no queue bound) would vanish; mandatory makes it an error.
            mandatory=True,
        )

    def _ensure_channel(self) -> Any:
        if self._conn is None or self._conn.is_closed or self._channel is None:
            self._conn = pika.BlockingConnection(self._params)
            self._channel = self._conn.channel()
            self._channel.confirm_delivery()
            self._declared.clear()
        return self._channel

    def _reset(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # already broken; closing is best effort
                pass

    def close(self) -> None:
        with self._lock:
            self._reset()
