"""The gateway's own look at RabbitMQ: queue depths (for backpressure) and a health check.

One blocking pika connection behind a lock, used from worker threads; reopened when it
broke. Depths are read with passive `queue_declare` (the broker's count of ready messages,
the jobs no worker holds yet) and reused for `ttl` seconds, so a flood of requests costs the
broker one round of declares per second per model, not one per request."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pika
import pika.exceptions

from genq import names
from genq.errors import BrokerError
from genq.tls import TlsSettings, pika_parameters

__all__ = ["BrokerProbe"]

# Seconds to connect or to wait on one reply: a health check must answer fast.
_TIMEOUT = 3.0


class BrokerProbe:
    def __init__(self, url: str, *, levels: int, ttl: float, tls: TlsSettings) -> None:
        self._params = pika_parameters(url, tls)
        self._params.socket_timeout = _TIMEOUT
        self._params.blocked_connection_timeout = _TIMEOUT
        self._params.connection_attempts = 1
        self._levels = levels
        self._ttl = ttl
        self._lock = threading.Lock()
        self._conn: Any = None
        self._channel: Any = None
        self._depths: dict[str, tuple[float, int]] = {}

    def depth(self, model: str) -> int:
        """Ready messages in all of `model`'s level queues (at most `ttl` seconds old)."""
        cached = self._fresh(model)
        if cached is not None:
            return cached
        total = 0
        with self._lock:
            # Looked at again under the lock: the threads of a burst that all found it stale
            # wait here for the first one's reading instead of each taking their own.
            cached = self._fresh(model)
            if cached is not None:
                return cached
            now = time.monotonic()
            for level in range(self._levels):
                queue = names.level_queue(model, level)
                total += int(self._call(lambda q=queue: self._count(q)))
            self._depths[model] = (now, total)
        return total

    def cached_depth(self, model: str) -> int | None:
        """The depth if a reading at most `ttl` seconds old is at hand (no I/O), else None."""
        return self._fresh(model)

    def _fresh(self, model: str) -> int | None:
        cached = self._depths.get(model)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        return None

    def ping(self) -> None:
        """Raise `BrokerError` unless the broker answers a round trip now."""
        with self._lock:
            # amq.direct exists on every vhost: a passive declare is a pure round trip.
            self._call(lambda: self._channel.exchange_declare("amq.direct", passive=True))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _count(self, queue: str) -> int:
        try:
            reply = self._channel.queue_declare(queue, passive=True)
            return int(reply.method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._channel = None
            if exc.reply_code == 404:  # never declared: no producer or worker used it yet
                return 0
            raise

    def _call(self, fn: Any) -> Any:
        # One retry on a fresh connection: an idle connection the broker dropped (missed
        # heartbeats, a restart) is no reason to fail the request.
        for attempt in (1, 2):
            try:
                self._ensure()
                return fn()
            except (pika.exceptions.AMQPError, OSError) as exc:
                self._drop()
                if attempt == 2:
                    raise BrokerError(f"rabbitmq: {exc!r}") from exc
        raise AssertionError("unreachable")

    def _ensure(self) -> None:
        if self._conn is None or not self._conn.is_open:
            self._conn = pika.BlockingConnection(self._params)
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._conn.channel()

    def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                conn.close()
