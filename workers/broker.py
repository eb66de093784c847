"""The worker's link to RabbitMQ: one thread that owns a pika connection.

pika connections are not thread-safe, so every broker operation runs on this thread: the
asyncio side asks for acks and publishes through `add_callback_threadsafe`, and deliveries
come back to the event loop with `call_soon_threadsafe`. Both ways, what a burst queues is
handed over with one wake-up, not one per message: the wake-ups were most of the worker's
CPU outside vLLM.

Credit: one consumer per level queue, each with prefetch `window` (basic.qos with
global=false is per consumer in RabbitMQ). Jobs are acked when they are admitted into the
engine (see workers/consumer.py), so what a worker holds unacked is only its not-yet-started
window: at most levels × window messages, whatever the batch size. While the engine is nearly
empty, a second consumer per level queue takes more at once (`surge`, scheduler/surge.py)."""

from __future__ import annotations

import asyncio
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
from genq.tls import pika_parameters
from genq.topology import TOP_TURN, declare_model

__all__ = ["BrokerLink", "Delivery"]

log = logging.getLogger(__name__)

# Reconnect backoff: quick first retries for a blip, capped so a long outage costs little.
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 5.0
# How long the thread processes events before it looks at its outbox and consumers on its
# own. Whoever queues work for it wakes it at once (`_call`), so this is only a backstop:
# at 0.05 s the polling alone cost the worker ~1 ms of CPU per job on the bench workload.
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
    redelivered: bool


class BrokerLink:
    def __init__(
        self,
        url: str,
        *,
        model: str,
        levels: int,
        window: int,
        loop: asyncio.AbstractEventLoop,
        on_delivery: Callable[[Delivery], None],
        on_reset: Callable[[int], None],
    ) -> None:
        self._params = pika_parameters(url)
        # Heartbeats keep a dead peer from holding jobs unseen; the loop below services them.
        self._params.heartbeat = 30
        self._model = model
        self._levels = levels
        self._window = window
        self._loop = loop
        self._on_delivery = on_delivery
        self._on_reset = on_reset
        self._epoch = 0
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._publish_channel: Any = None
        self._consumer_tags: list[str] = []
        self._surge = 0
        """The surge consumers' prefetch asked for (0: none); `_surge_applied` is what runs."""
        self._surge_applied = 0
        self._surge_tags: list[str] = []
        self._own_cancels: set[str] = set()
        self._cancelled_by_broker = ""
        self._stopping = threading.Event()
        self._consuming = True
        self._taking = True
        """False while the worker holds off (see `take`): no consumers, nothing delivered."""
        self._outbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._settlements: queue.SimpleQueue[tuple[int, int, bool]] = queue.SimpleQueue()
        self._settle_scheduled = False
        self._deliveries: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._delivery_scheduled = False
        self._take_waiters: queue.Queue[Future[None]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="genq-broker", daemon=True)
        self.connected = threading.Event()

    # -- lifecycle (any thread) -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection: the broker requeues every unacked (held) message."""
        self._stopping.set()
        self._call(lambda: None)  # wake the loop
        self._thread.join(timeout)

    # -- operations (any thread) ------------------------------------------------------------

    def ack(self, epoch: int, tag: int) -> None:
        self._settle(epoch, tag, requeue=False)

    def requeue(self, epoch: int, tag: int) -> None:
        """Give a held message back to its queue (it keeps its place at the head)."""
        self._settle(epoch, tag, requeue=True)

    def _settle(self, epoch: int, tag: int, *, requeue: bool) -> None:
        # Queued, and the thread woken once for all that a burst queues (an admission acks
        # its whole batch): a wake-up per ack was most of this thread's CPU.
        self._settlements.put((epoch, tag, requeue))
        if not self._settle_scheduled:
            self._settle_scheduled = True
            if not self._call(self._settle_all):
                self._settle_scheduled = False  # no connection: its messages went back

    def _settle_all(self) -> None:
        self._settle_scheduled = False  # first: what is queued after this gets a new call
        while True:
            try:
                epoch, tag, requeue = self._settlements.get_nowait()
            except queue.Empty:
                return
            if epoch != self._epoch or self._channel is None or not self._channel.is_open:
                continue  # that connection's messages went back to the broker with it
            if requeue:
                self._channel.basic_nack(tag, requeue=True)
            else:
                self._channel.basic_ack(tag)

    def pause(self) -> None:
        """Stop taking new messages (shutdown); keep the connection so acks of admitted jobs
        and hand-back publishes still go through. Deliveries already on the wire go straight
        back (no blocking basic.cancel here: a blocking call inside this thread's callbacks
        can wait forever on the very loop it blocks)."""
        self._consuming = False

    def take(self, on: bool) -> Future[None]:
        """Consume, or not: a worker whose engine stays full gives its window back and stops
        consuming, so the jobs it would hold wait in RabbitMQ where other workers see them
        (workers/consumer.py). Applied by the thread between rounds (basic.cancel blocks);
        the future is done once it was, or once there is no connection to apply it to."""
        future: Future[None] = Future()
        self._taking = on
        self._take_waiters.put(future)
        if not self._call(lambda: None):  # wake the loop; no connection: nothing to cancel
            self._settle_take_waiters()
        return future

    def surge(self, prefetch: int) -> None:
        """Consume each level queue a second time with this prefetch, or (0) stop: an engine
        with far more room than the windows fill per round trip (scheduler/surge.py). Applied
        by the thread between rounds, like `take`; a worker not taking has no surge."""
        if prefetch != self._surge:
            self._surge = prefetch
            self._call(lambda: None)  # wake the thread; no connection: nothing to apply

    def _settle_take_waiters(self) -> None:
        while True:
            try:
                future = self._take_waiters.get_nowait()
            except queue.Empty:
                return
            if not future.done():
                future.set_result(None)

    def publish(
        self, exchange: str, routing_key: str, headers: dict[str, Any], body: bytes,
        *, job_id: str,
    ) -> Future[None]:
        """Publish with a broker confirm; the future fails if it was not confirmed."""
        future: Future[None] = Future()
        if self._conn is None or not self._conn.is_open:
            future.set_exception(ConnectionError("not connected to the broker"))
            return future
        self._outbox.put((exchange, routing_key, headers, body, job_id, future))
        self._call(lambda: None)  # wake the thread: it publishes between rounds
        return future

    def _drain_outbox(self) -> None:
        """Publish what the loop asked for. Done here, between event-processing rounds and
        never inside a pika callback: a confirm-mode publish blocks until the broker acks,
        and blocking inside a callback can wait on the loop it blocks."""
        while True:
            try:
                exchange, routing_key, headers, body, job_id, future = self._outbox.get_nowait()
            except queue.Empty:
                return
            try:
                self._publish_channel.basic_publish(
                    exchange=exchange, routing_key=routing_key, body=body, mandatory=True,
                    # Handed back or republished: older than nearly all that queued behind
                    # it, so back at the top turn (scheduler/turns.py).
                    properties=pika.BasicProperties(
                        **message_properties(job_id, headers, turn=TOP_TURN)),
                )
                future.set_result(None)
            except Exception as exc:
                future.set_exception(exc)
                # The connection or the publish channel is gone (a closed channel stays
                # closed): start over on a new connection. A nack or an unroutable return
                # fails only its own publish.
                if isinstance(exc, (pika.exceptions.AMQPConnectionError,
                                    pika.exceptions.AMQPChannelError)):
                    raise

    def _call(self, fn: Callable[[], None]) -> bool:
        conn = self._conn
        if conn is None or not conn.is_open:
            return False
        try:
            conn.add_callback_threadsafe(fn)
            return True
        except Exception:  # closed between the check and the call
            return False

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
                    self._conn.process_data_events(time_limit=_POLL_SECONDS)  # type: ignore[union-attr]
                    if self._cancelled_by_broker:
                        raise _ConsumerCancelled(
                            f"the broker cancelled consumer {self._cancelled_by_broker} "
                            "(its queue deleted?)")
                    self._drain_outbox()
                    self._settle_all()  # in case a scheduled call died with a connection
                    self._sync_consumers()
            except (pika.exceptions.AMQPError, OSError, _ConsumerCancelled) as exc:
                log.warning("broker connection lost (%r); reconnecting in %.1f s", exc, delay)
            except Exception:  # a bug in a callback must not end consuming for good
                log.exception("broker link failed; reconnecting in %.1f s", delay)
            finally:
                self.connected.clear()
                self._close()
                self._settle_take_waiters()  # the held messages went back with the connection
                try:
                    self._loop.call_soon_threadsafe(self._on_reset, self._epoch)
                except RuntimeError:  # the event loop is closed: the worker is exiting
                    pass
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
        self._own_cancels: set[str] = set()
        self._cancelled_by_broker = ""
        if self._consuming and self._taking:
            self._consume_all(self._consumer_tags)
        self.connected.set()
        log.info("broker connected (epoch %d)", self._epoch)

    def _consume_all(self, tags: list[str]) -> None:
        # Highest level first: after a restart, or a hold-off, its head is the first job
        # handed over.
        for level in reversed(range(self._levels)):
            tags.append(self._channel.basic_consume(
                names.level_queue(self._model, level),
                self._make_callback(level, self._epoch),
            ))

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
        self._settle_take_waiters()

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
            self._deliveries.put(Delivery(epoch, method.delivery_tag, level,
                                          props.headers or {}, body, method.redelivered))
            if not self._delivery_scheduled:  # one loop wake-up for a burst, as for acks
                self._delivery_scheduled = True
                self._loop.call_soon_threadsafe(self._hand_over)
        return on_message

    def _hand_over(self) -> None:
        """On the worker's loop: pass on what arrived."""
        self._delivery_scheduled = False
        while True:
            try:
                delivery = self._deliveries.get_nowait()
            except queue.Empty:
                return
            self._on_delivery(delivery)

    def _close(self) -> None:
        conn, self._conn, self._channel, self._publish_channel = self._conn, None, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # the socket is already gone
                pass

