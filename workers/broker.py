"""The worker's link to RabbitMQ: one thread that owns a pika connection.

pika connections are not thread-safe, so every broker operation runs on this thread. The
worker's event loop asks for them through one command queue (settle, publish, take, surge),
which the thread drains once per round, between rounds of pika's event processing and never
inside a pika callback (a confirm-mode publish or a basic.cancel blocks, and blocking inside
a callback can wait on the very loop it blocks). The first command after a drain wakes the
thread; the rest of a burst (an admission acks its whole batch) rides along: one wake-up per
burst, not per message, as vLLM's engine core drains its input queue. Deliveries go the
other way the same way: a burst is handed to the loop in one call, so admission sees the
whole burst at once and admits it with one ADMIT round trip (handed over one call each,
admission ran per message: the fleet's throughput fell by a quarter and the worker's CPU
per job rose by ~1.5 ms, in `genq bench --quick` pairs).

Credit: one consumer per level queue, each with prefetch `window` (basic.qos with
global=false is per consumer in RabbitMQ). Jobs are acked when they are admitted into the
engine (workers/admission.py), so what a worker holds unacked is only its not-yet-started
window: at most levels × window messages, whatever the batch size. While the engine is nearly
empty, a second consumer per level queue takes more at once (`surge`, scheduler/surge.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from genq import names
from genq.protocol import message_properties
from genq.tls import TlsSettings, pika_parameters
from genq.topology import TOP_TURN, declare_model

__all__ = ["BrokerLink", "Delivery"]

log = logging.getLogger(__name__)

# Reconnect backoff: quick first retries for a blip, capped so a long outage costs little.
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 5.0
# How long the thread processes events before it drains its commands on its own. Whoever
# queues one wakes it at once (`_wake`), so this is only a backstop: polling every 0.05 s
# alone cost the worker ~1 ms of CPU per job on the bench workload.
_POLL_SECONDS = 1.0


class _ConsumerCancelled(Exception):
    """The broker cancelled a consumer (its queue was deleted, or its node went away)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    epoch: int
    """Which connection it came on: a tag is meaningless on any other."""
    tag: int
    level: int
    headers: dict[str, Any]
    body: bytes


# -- commands: what the event loop asks of the thread -------------------------------------


@dataclass(frozen=True, slots=True)
class _Settle:
    epoch: int
    tag: int
    requeue: bool


@dataclass(frozen=True, slots=True)
class _Publish:
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    body: bytes
    job_id: str
    future: Future[None]


@dataclass(frozen=True, slots=True)
class _Take:
    on: bool
    future: Future[None]


@dataclass(frozen=True, slots=True)
class _Surge:
    prefetch: int


_Command = _Settle | _Publish | _Take | _Surge


class BrokerLink:
    def __init__(
        self,
        url: str,
        tls: TlsSettings,
        *,
        model: str,
        levels: int,
        window: int,
        loop: asyncio.AbstractEventLoop,
        on_delivery: Callable[[Delivery], None],
        on_reset: Callable[[int], None],
    ) -> None:
        self._params = pika_parameters(url, tls)
        # Heartbeats keep a dead peer from holding jobs unseen; the loop below services them.
        self._params.heartbeat = 30
        self._model = model
        self._levels = levels
        self._window = window
        self._loop = loop
        self._on_delivery = on_delivery
        self._on_reset = on_reset
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._deliveries: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._hand_over_sent = False
        """A hand-over is on its way to the loop: deliveries queued meanwhile ride along."""
        self._wake_sent = False
        """A wake-up is on its way to the thread: commands queued meanwhile ride along."""
        self._stopping = threading.Event()
        self._consuming = True
        """False once the worker stops (`pause`): deliveries go straight back."""
        self._thread = threading.Thread(target=self._run, name="genq-broker", daemon=True)
        # The thread's own state, touched by no other thread.
        self._epoch = 0
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._publish_channel: Any = None
        self._taking = True
        """False while the worker holds off (`take`): no consumers, nothing delivered."""
        self._surge = 0
        """The surge consumers' prefetch asked for (0: none); `_surge_applied` is what runs."""
        self._surge_applied = 0
        self._consumer_tags: list[str] = []
        self._surge_tags: list[str] = []
        self._own_cancels: set[str] = set()
        self._cancelled_by_broker = ""
        self._take_waiters: list[Future[None]] = []
        self._unsent: list[_Publish] = []
        """Publishes drained while no connection was up: sent on the next one."""

    # -- lifecycle (any thread) -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection: the broker requeues every unacked (held) message."""
        self._stopping.set()
        self._wake()
        self._thread.join(timeout)

    # -- commands (the event loop) ----------------------------------------------------------

    def ack(self, epoch: int, tag: int) -> None:
        self._send(_Settle(epoch, tag, requeue=False))

    def requeue(self, epoch: int, tag: int) -> None:
        """Give a held message back to its queue (it keeps its place at the head)."""
        self._send(_Settle(epoch, tag, requeue=True))

    def publish(
        self,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any],
        body: bytes,
        *,
        job_id: str,
    ) -> Future[None]:
        """Publish with a broker confirm; the future fails if it was not confirmed."""
        future: Future[None] = Future()
        if not self._connected():
            future.set_exception(ConnectionError("not connected to the broker"))
            return future
        self._send(_Publish(exchange, routing_key, headers, body, job_id, future))
        return future

    def take(self, on: bool) -> Future[None]:
        """Consume, or not: a worker whose engine stays full gives its window back and stops
        consuming, so the jobs it would hold wait in RabbitMQ where other workers see them
        (workers/credit.py). The future is done once the consumers were started or
        cancelled, or at once if there is no connection to apply it to (the next one is
        set up as asked)."""
        future: Future[None] = Future()
        self._send(_Take(on, future))
        if not self._connected():
            future.set_result(None)
        return future

    def surge(self, prefetch: int) -> None:
        """Consume each level queue a second time with this prefetch, or (0) stop: an engine
        with far more room than the windows fill per round trip (scheduler/surge.py). A
        worker not taking has no surge."""
        self._send(_Surge(prefetch))

    def pause(self) -> None:
        """Stop taking new messages (shutdown); keep the connection so acks of admitted jobs
        and hand-back publishes still go through. Deliveries already on the wire go straight
        back to their queues."""
        self._consuming = False

    def _send(self, command: _Command) -> None:
        self._commands.put(command)
        if not self._wake_sent:
            self._wake_sent = True
            if not self._wake():
                self._wake_sent = False  # no connection: drained when the next one is up

    def _wake(self) -> bool:
        """Make the thread's current round end, so it drains its commands."""
        conn = self._conn
        if conn is None or not conn.is_open:
            return False
        try:
            conn.add_callback_threadsafe(lambda: None)
            return True
        except Exception:  # noqa: BLE001 - closed between the check and the call
            return False

    def _connected(self) -> bool:
        conn = self._conn
        return conn is not None and conn.is_open

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        """Connect, consume, and on any failure start over: a broker restart, a dropped
        connection or a closed channel costs a reconnect, never the worker. Each connection
        is a new epoch: acks and requeues of deliveries from an older one are dropped (the
        broker requeued those messages when their connection died, and a delivery tag means
        nothing on another channel: acking it there would close the new channel)."""
        delay = _BACKOFF_FIRST
        while not self._stopping.is_set():
            try:
                self._connect()
                delay = _BACKOFF_FIRST
                while not self._stopping.is_set():
                    self._drain()
                    self._conn.process_data_events(time_limit=_POLL_SECONDS)  # type: ignore[union-attr]
                    if self._cancelled_by_broker:
                        raise _ConsumerCancelled(
                            f"the broker cancelled consumer {self._cancelled_by_broker} "
                            "(its queue deleted?)"
                        )
            except (pika.exceptions.AMQPError, OSError, _ConsumerCancelled) as exc:
                log.warning("broker connection lost (%r); reconnecting in %.1f s", exc, delay)
            except Exception:  # a bug in a callback must not end consuming for good
                log.exception("broker link failed; reconnecting in %.1f s", delay)
            finally:
                self._close()
                self._drain()  # takes and surges noted, publishes kept for the next connection
                with contextlib.suppress(RuntimeError):  # the loop is closed: exiting
                    self._loop.call_soon_threadsafe(self._on_reset, self._epoch)
            if not self._stopping.wait(delay):
                delay = min(delay * 2, _BACKOFF_MAX)

    def _connect(self) -> None:
        self._conn = pika.BlockingConnection(self._params)
        self._epoch += 1
        self._channel = self._conn.channel()
        declare_model(self._channel, self._model, self._levels)
        self._channel.basic_qos(prefetch_count=self._window, global_qos=False)
        # Without this a consumer the broker cancels is gone for good while the connection
        # lives on: its queue, declared again by the next producer, would never be consumed.
        # Starting over declares the queues again and consumes them all.
        self._channel.add_on_cancel_callback(self._cancelled)
        self._publish_channel = self._conn.channel()
        self._publish_channel.confirm_delivery()
        self._consumer_tags = []
        self._surge_tags = []
        self._surge_applied = 0
        self._own_cancels = set()
        self._cancelled_by_broker = ""
        log.info("broker connected (epoch %d)", self._epoch)

    def _drain(self) -> None:
        """Carry out every command queued, then start or cancel consumers as asked. Without
        a connection, only the asked-for state is noted (settlements are moot: their
        messages went back with the connection)."""
        self._wake_sent = False  # first: a command queued after this wakes the next round
        live = self._channel is not None and self._channel.is_open
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            if isinstance(command, _Settle):
                if live and command.epoch == self._epoch:
                    if command.requeue:
                        self._channel.basic_nack(command.tag, requeue=True)
                    else:
                        self._channel.basic_ack(command.tag)
            elif isinstance(command, _Publish):
                self._unsent.append(command)
            elif isinstance(command, _Take):
                self._taking = command.on
                self._take_waiters.append(command.future)
            else:
                self._surge = command.prefetch
        if live:
            while self._unsent:
                self._publish(self._unsent.pop(0))  # raises if the connection went
            self._sync_consumers()
        for future in self._take_waiters:
            if not future.done():
                future.set_result(None)
        self._take_waiters = []

    def _publish(self, command: _Publish) -> None:
        try:
            self._publish_channel.basic_publish(
                exchange=command.exchange,
                routing_key=command.routing_key,
                body=command.body,
                mandatory=True,
                # Handed back or republished: older than nearly all that queued behind
                # it, so back at the top turn (scheduler/turns.py).
                properties=pika.BasicProperties(
                    **message_properties(command.job_id, command.headers, turn=TOP_TURN)
                ),
            )
            command.future.set_result(None)
        except Exception as exc:  # the publisher hears of any failure
            command.future.set_exception(exc)
            # The connection or the publish channel is gone (a closed channel stays
            # closed): start over on a new connection. A nack or an unroutable return
            # fails only its own publish.
            if isinstance(
                exc,
                (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError, OSError),
            ):
                raise

    def _consume_all(self, tags: list[str]) -> None:
        # Highest level first: after a restart, or a hold-off, its head is the first job
        # handed over.
        for level in reversed(range(self._levels)):
            tags.append(
                self._channel.basic_consume(
                    names.level_queue(self._model, level),
                    self._make_callback(level, self._epoch),
                )
            )

    def _cancel_all(self, tags: list[str]) -> None:
        self._own_cancels.update(tags)
        for tag in tags:
            # Deliveries not yet handed to the loop go back to the queue (pika rejects
            # them with requeue); those the loop holds stay held until it requeues them.
            self._channel.basic_cancel(tag)
        tags.clear()

    def _sync_consumers(self) -> None:
        """Start or cancel the level consumers as `take` asked."""
        if self._taking and self._consuming and not self._consumer_tags:
            self._consume_all(self._consumer_tags)
        elif not self._taking and self._consumer_tags:
            self._cancel_all(self._consumer_tags)
        surge = self._surge if self._taking and self._consuming else 0
        if surge != self._surge_applied:
            self._cancel_all(self._surge_tags)
            if surge:
                # The prefetch of consumers started after it (RabbitMQ's per-consumer
                # basic.qos), then back to the window for the ordinary ones.
                self._channel.basic_qos(prefetch_count=surge, global_qos=False)
                self._consume_all(self._surge_tags)
                self._channel.basic_qos(prefetch_count=self._window, global_qos=False)
            self._surge_applied = surge

    def _cancelled(self, frame: Any) -> None:
        # Noted here, acted on by the loop: pika logs any exception raised in a callback.
        # A consumer this link is cancelling itself (hold-off) is not the broker's doing.
        if frame.method.consumer_tag not in self._own_cancels:
            self._cancelled_by_broker = frame.method.consumer_tag

    def _make_callback(self, level: int, epoch: int) -> Callable[..., None]:
        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            if not self._consuming:  # shutting down: back to the queue for another worker
                ch.basic_nack(method.delivery_tag, requeue=True)
                return
            self._deliveries.put(
                Delivery(epoch, method.delivery_tag, level, props.headers or {}, body)
            )
            if not self._hand_over_sent:
                self._hand_over_sent = True
                self._loop.call_soon_threadsafe(self._hand_over)

        return on_message

    def _hand_over(self) -> None:
        """On the worker's loop: pass on everything that arrived."""
        self._hand_over_sent = False  # first: what arrives after this gets a new call
        while True:
            try:
                delivery = self._deliveries.get_nowait()
            except queue.Empty:
                return
            self._on_delivery(delivery)

    def _close(self) -> None:
        conn, self._conn, self._channel, self._publish_channel = self._conn, None, None, None
        if conn is not None and conn.is_open:
            with contextlib.suppress(Exception):  # the socket is already gone
                conn.close()
