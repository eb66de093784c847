"""Publishing job messages to RabbitMQ with publisher confirms, pipelined.

A publish counts only once the broker has confirmed it: without confirms a producer whose
connection dropped was seen to lose a fifth of a batch without a word. Waiting for each
confirm before the next publish caps a client at about a thousand jobs a second, so a batch
is published in one go on an asynchronous pika connection (its own I/O thread) and the
caller waits until the broker has confirmed every message of it.

The unconfirmed part of a batch (the link dropped, the broker nacked, a message came back
unroutable) is retried on a fresh connection, with a short backoff, for up to one publish
timeout after the first failure: a dropped connection or a quick broker restart costs the
caller a pause, not an error. Past that, `PublishError.confirmed` lists exactly which
messages the broker confirmed (confirms need not arrive in order), so the caller can tell
accepted jobs from the rest. A retried message may reach the broker twice (the broker had it
but its confirm was lost with the connection); the worker's admission (a Lua script on the
job record) runs a job once whatever the copies."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection

from genq import names
from genq.errors import PublishError
from genq.protocol import message_properties
from genq.tls import TlsSettings, pika_parameters
from genq.topology import TOP_TURN, declare_model

__all__ = ["OutgoingJob", "Publisher"]

# Retry backoff after a failed attempt: quick for a dropped connection, doubling so a broker
# that is restarting is not hammered; attempts stop one publish timeout after the first
# failure, so a caller learns of a real outage in seconds.
_RETRY_FIRST = 0.2
_RETRY_MAX = 2.0


@dataclass(frozen=True, slots=True)
class OutgoingJob:
    job_id: str
    model: str
    level: int
    headers: dict[str, Any]
    body: bytes
    turn: int = TOP_TURN
    """Its place among its level queue's jobs (RabbitMQ message priority): under the fair
    policy set from its tenant's demand; else, and for a republished job, the top turn, so
    every job of a level queues FIFO (scheduler/turns.py)."""


class _Batch:
    """One publish attempt's messages in flight, by delivery tag (tags ascend as published)."""

    def __init__(self, jobs: Sequence[OutgoingJob]) -> None:
        self.acked = [False] * len(jobs)
        self.by_tag: dict[int, int] = {}
        self._by_id = {job.job_id: i for i, job in enumerate(jobs)}
        self._order: deque[int] = deque()
        self.returned: set[int] = set()
        """Indexes the broker returned as unroutable: their ack means nothing."""
        self.failed: str | None = None
        self.done = threading.Event()
        self.settled_at = time.monotonic()
        """When a confirm last arrived: a broker that is slow (flow control under a big
        batch) but confirming is waited for; one that stopped confirming is not."""

    def add(self, tag: int, index: int) -> None:
        self.by_tag[tag] = index
        self._order.append(tag)

    def settle(self, tag: int, multiple: bool, ok: bool) -> None:
        """An ack or nack; `multiple` covers every outstanding tag up to `tag`."""
        self.settled_at = time.monotonic()
        tags = [tag]
        if multiple:
            tags = []
            while self._order and self._order[0] <= tag:
                tags.append(self._order.popleft())
        for t in tags:
            index = self.by_tag.pop(t, None)
            if index is None:
                continue
            if ok and index not in self.returned:
                self.acked[index] = True
            elif not ok:
                self.failed = self.failed or "nacked by the broker"
        if not self.by_tag:
            self.done.set()

    def returned_unroutable(self, job_id: str) -> None:
        """basic.return (mandatory, no queue bound): the broker acks it next, so mark it
        first; keep waiting for the other confirms."""
        index = self._by_id.get(job_id)
        if index is not None:
            self.returned.add(index)
        self.failed = self.failed or f"unroutable message {job_id} (its queue is missing)"

    def fail(self, why: str) -> None:
        """The link is gone: no more confirms will come."""
        self.failed = self.failed or why
        self.done.set()


class _Link:
    """An asynchronous pika connection with one confirm-mode channel, on its own thread."""

    def __init__(self, params: pika.URLParameters, timeout: float) -> None:
        self._ready = threading.Event()
        self._error: str | None = None
        self._batch: _Batch | None = None
        self._next_tag = 1
        self.channel: Any = None
        self.conn = SelectConnection(
            params,
            on_open_callback=self._opened,
            on_open_error_callback=self._open_failed,
            on_close_callback=self._closed,
        )
        self._thread = threading.Thread(
            target=self.conn.ioloop.start, name="genq-publisher", daemon=True
        )
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
        self.conn.ioloop.stop()  # else the thread would spin on a connection that never was

    def _closed(self, _conn: Any, reason: Any) -> None:
        self._lost(f"connection closed: {reason!r}")
        self.conn.ioloop.stop()

    def _lost(self, why: str) -> None:
        self._error = self._error or why
        if self._batch is not None:
            self._batch.fail(why)

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        if self._batch is not None:
            self._batch.settle(method.delivery_tag, method.multiple, ok)

    def _returned(self, _ch: Any, _method: Any, props: Any, _body: bytes) -> None:
        if self._batch is not None:
            self._batch.returned_unroutable(props.correlation_id)

    def _send(self, jobs: Sequence[OutgoingJob], indexes: list[int], batch: _Batch) -> None:
        self._batch = batch
        if self._error is not None:  # closed between the caller's check and now
            batch.fail(self._error)
            return
        try:
            for i in indexes:
                job = jobs[i]
                batch.add(self._next_tag, i)
                self._next_tag += 1
                self.channel.basic_publish(
                    exchange=names.EXCHANGE,
                    routing_key=names.level_routing_key(job.model, job.level),
                    body=job.body,
                    properties=pika.BasicProperties(
                        **message_properties(job.job_id, job.headers, turn=job.turn)
                    ),
                    mandatory=True,
                )
        except Exception as exc:  # noqa: BLE001 - the submitter hears of it, whatever it is
            batch.fail(f"publish failed: {exc!r}")
            return
        if not batch.by_tag:
            batch.done.set()

    # -- caller thread ------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return self._error is None and self.conn.is_open

    def publish(self, jobs: Sequence[OutgoingJob], indexes: list[int], batch: _Batch) -> None:
        try:
            self.conn.ioloop.add_callback_threadsafe(lambda: self._send(jobs, indexes, batch))
        except Exception as exc:  # noqa: BLE001 - the I/O loop is gone; the submitter hears
            batch.fail(f"connection gone: {exc!r}")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # the I/O loop is already gone
            if self.conn.is_open:
                self.conn.ioloop.add_callback_threadsafe(self.conn.close)
            elif self._thread.is_alive():
                self.conn.ioloop.add_callback_threadsafe(self.conn.ioloop.stop)
        self._thread.join(5)


class Publisher:
    def __init__(self, url: str, tls: TlsSettings, *, levels: int, timeout: float) -> None:
        self._params = pika_parameters(url, tls)
        self._params.blocked_connection_timeout = timeout
        self._params.socket_timeout = timeout
        self._params.connection_attempts = 1
        # Named, so an operator (and a test) can tell producer connections apart.
        self._params.client_properties = {"connection_name": f"genq-producer {os.getpid()}"}
        self._timeout = timeout
        self._levels = levels
        self._lock = threading.Lock()  # one batch in flight per publisher
        self._link: _Link | None = None
        self._declared: set[str] = set()

    def publish(self, jobs: Sequence[OutgoingJob]) -> None:
        """Publish every job, confirmed, or raise `PublishError` whose `confirmed` lists the
        indexes (into `jobs`) the broker did confirm."""
        with self._lock:
            acked = [False] * len(jobs)
            errors: list[str] = []
            give_up_at: float | None = None  # set by the first failure
            delay = _RETRY_FIRST
            while True:
                todo = [i for i, ok in enumerate(acked) if not ok]
                if not todo:
                    return
                if give_up_at is not None and time.monotonic() >= give_up_at:
                    break
                error = self._attempt(jobs, todo, acked)
                if error is None:
                    continue
                errors.append(error)
                self._reset()
                if give_up_at is None:
                    give_up_at = time.monotonic() + self._timeout
                time.sleep(max(0.0, min(delay, give_up_at - time.monotonic())))
                delay = min(delay * 2, _RETRY_MAX)
            confirmed = [i for i, ok in enumerate(acked) if ok]
            why = errors[0] if errors[-1] == errors[0] else f"{errors[0]}; then {errors[-1]}"
            why += f" ({len(errors)} attempts)"
            raise PublishError(
                f"the broker did not confirm {len(jobs) - len(confirmed)} of {len(jobs)} "
                f"jobs ({len(confirmed)} confirmed): {why}",
                confirmed=confirmed,
            )

    def _attempt(
        self, jobs: Sequence[OutgoingJob], todo: list[int], acked: list[bool]
    ) -> str | None:
        """Publish `todo` once, marking in `acked` what the broker confirmed; why it failed,
        or None."""
        try:
            self._declare({jobs[i].model for i in todo})
            link = self._ensure_link()
        except (pika.exceptions.AMQPError, OSError) as exc:
            return f"cannot reach the broker: {exc!r}"
        batch = _Batch(jobs)
        link.publish(jobs, todo, batch)
        # Confirms keep coming, each within the timeout of the last, or the attempt failed.
        # (A fixed deadline for the whole batch failed a 10,000-job batch that RabbitMQ was
        # confirming slowly, under flow control, while a worker consumed the same queues.)
        while not batch.done.wait(min(1.0, self._timeout)):
            if time.monotonic() - batch.settled_at >= self._timeout:
                batch.fail(f"no confirm for {self._timeout} s")
                break
        for i, ok in enumerate(batch.acked):
            acked[i] = acked[i] or ok
        # A queue gone missing (deleted, or a broker that lost its data): declare again.
        self._declared -= {jobs[i].model for i in batch.returned}
        return batch.failed

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
            if conn.is_open:
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
