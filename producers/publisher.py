"""Publishing job messages to RabbitMQ with publisher confirms, pipelined.

A publish counts only once the broker has confirmed it: without confirms a producer whose
connection dropped was seen to lose a fifth of a batch without a word. Waiting for each
confirm before the next publish caps a client at about a thousand jobs a second, so a batch
is published in one go on an asynchronous pika connection (its own I/O thread) and the
caller waits until the broker has confirmed every message of it.

An unconfirmed batch is retried, the unconfirmed part only, on a fresh connection; if that
fails too, `PublishError` says how many (a prefix of the batch) were confirmed. A retried
publish may reach the broker twice; the worker's admission (a Lua script on the job record)
runs a job once whatever the copies."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection

from genq import names
from genq.errors import PublishError
from genq.protocol import CONTENT_TYPE
from genq.topology import declare_model

__all__ = ["OutgoingJob", "Publisher"]

# Attempts for one batch before giving up: enough to ride out a broker restart's first
# refused connections, few enough that a caller learns of an outage in seconds.
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class OutgoingJob:
    job_id: str
    model: str
    level: int
    headers: dict[str, Any]
    body: bytes


class _Batch:
    """One publish call's messages in flight, by delivery tag (tags ascend as published)."""

    def __init__(self, size: int) -> None:
        self.acked = [False] * size
        self.by_tag: dict[int, int] = {}
        self._order: deque[int] = deque()
        self.failed: str | None = None
        self.done = threading.Event()

    def add(self, tag: int, index: int) -> None:
        self.by_tag[tag] = index
        self._order.append(tag)

    def settle(self, tag: int, multiple: bool, ok: bool) -> None:
        """An ack or nack; `multiple` covers every outstanding tag up to `tag`."""
        tags = [tag]
        if multiple:
            tags = []
            while self._order and self._order[0] <= tag:
                tags.append(self._order.popleft())
        for t in tags:
            index = self.by_tag.pop(t, None)
            if index is not None and ok:
                self.acked[index] = True
            elif index is not None and self.failed is None:
                self.failed = "nacked by the broker"
        if not self.by_tag:
            self.done.set()

    def fail(self, why: str) -> None:
        self.failed = self.failed or why
        self.done.set()


def _confirmed_prefix(acked: list[bool]) -> int:
    n = 0
    while n < len(acked) and acked[n]:
        n += 1
    return n


class _Link:
    """An asynchronous pika connection with one confirm-mode channel, on its own thread."""

    def __init__(self, params: pika.URLParameters, timeout: float) -> None:
        self._ready = threading.Event()
        self._error: str | None = None
        self._batch: _Batch | None = None
        self._next_tag = 1
        self.channel: Any = None
        self.conn = SelectConnection(params, on_open_callback=self._opened,
                                     on_open_error_callback=self._open_failed,
                                     on_close_callback=self._closed)
        self._thread = threading.Thread(target=self.conn.ioloop.start,
                                        name="genq-publisher", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            self.close()
            raise pika.exceptions.AMQPConnectionError(self._error or "connect timed out")

    # -- I/O thread callbacks -----------------------------------------------------------
    def _opened(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._channel_open)

    def _channel_open(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(lambda _ch, reason: self._lost(f"channel closed: {reason}"))
        channel.add_on_return_callback(self._returned)
        channel.confirm_delivery(self._confirmed, callback=lambda _f: self._ready.set())

    def _open_failed(self, _conn: Any, error: Any) -> None:
        self._error = f"cannot connect: {error!r}"
        self._ready.set()

    def _closed(self, _conn: Any, reason: Any) -> None:
        self._lost(f"connection closed: {reason!r}")
        self.conn.ioloop.stop()

    def _lost(self, why: str) -> None:
        self._error = why
        if self._batch is not None:
            self._batch.fail(why)

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        if self._batch is not None:
            self._batch.settle(method.delivery_tag, method.multiple, ok)

    def _returned(self, _ch: Any, _method: Any, props: Any, _body: bytes) -> None:
        # Unroutable (no queue bound): the ack that follows must not count as delivery.
        if self._batch is not None:
            self._batch.fail(f"unroutable message {props.correlation_id}")

    def _send(self, jobs: Sequence[OutgoingJob], indexes: list[int], batch: _Batch) -> None:
        self._batch = batch
        for i in indexes:
            job = jobs[i]
            batch.add(self._next_tag, i)
            self._next_tag += 1
            self.channel.basic_publish(
                exchange=names.EXCHANGE,
                routing_key=names.level_routing_key(job.model, job.level),
                body=job.body,
                properties=pika.BasicProperties(
                    content_type=CONTENT_TYPE, content_encoding="utf-8",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    correlation_id=job.job_id, headers=job.headers),
                mandatory=True,
            )
        if not batch.by_tag:
            batch.done.set()

    # -- caller thread ------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return self._error is None and self.conn.is_open

    def publish(self, jobs: Sequence[OutgoingJob], indexes: list[int], batch: _Batch) -> None:
        self.conn.ioloop.add_callback_threadsafe(lambda: self._send(jobs, indexes, batch))

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.ioloop.add_callback_threadsafe(self.conn.close)
        self._thread.join(5)


class Publisher:
    def __init__(self, url: str, *, levels: int, timeout: float) -> None:
        self._params = pika.URLParameters(url)
        self._params.blocked_connection_timeout = timeout
        self._params.socket_timeout = timeout
        self._params.connection_attempts = 1
        self._timeout = timeout
        self._levels = levels
        self._lock = threading.Lock()  # one batch in flight per publisher
        self._link: _Link | None = None
        self._declared: set[str] = set()

    def publish(self, jobs: Sequence[OutgoingJob]) -> None:
        """Publish every job, confirmed, or raise `PublishError` with `.confirmed` set."""
        with self._lock:
            acked = [False] * len(jobs)
            last_error = ""
            for _attempt in range(_ATTEMPTS):
                todo = [i for i, ok in enumerate(acked) if not ok]
                if not todo:
                    return
                try:
                    self._declare({jobs[i].model for i in todo})
                    link = self._ensure_link()
                except (pika.exceptions.AMQPError, OSError) as exc:
                    last_error = repr(exc)
                    self._reset()
                    continue
                batch = _Batch(len(jobs))
                link.publish(jobs, todo, batch)
                # The whole batch is confirmed within the timeout, or it failed.
                if not batch.done.wait(self._timeout + len(todo) / 1000):
                    batch.fail(f"no confirm within {self._timeout} s")
                acked = [a or b for a, b in zip(acked, batch.acked)]
                if batch.failed:
                    last_error = batch.failed
                    self._reset()
            if all(acked):
                return
            error = PublishError(f"broker did not confirm {acked.count(False)} of {len(jobs)} "
                                 f"jobs: {last_error}")
            error.confirmed = _confirmed_prefix(acked)  # type: ignore[attr-defined]
            raise error

    def _declare(self, models: set[str]) -> None:
        """Declare a model's exchange and queues once (idempotent at the broker)."""
        missing = models - self._declared
        if not missing:
            return
        conn = pika.BlockingConnection(self._params)
        try:
            channel = conn.channel()
            for model in missing:
                declare_model(channel, model, self._levels)
                self._declared.add(model)
        finally:
            conn.close()

    def _ensure_link(self) -> _Link:
        if self._link is None or not self._link.usable:
            self._reset()
            self._link = _Link(self._params, self._timeout)
        return self._link

    def _reset(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def close(self) -> None:
        with self._lock:
            self._reset()
