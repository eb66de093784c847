"""Celery task events, so Flower lists every job as received / started / succeeded / failed.

Sent from a thread of their own through Celery's event dispatcher: publishing must never
stall the event loop that feeds the engine, and events are best effort (Flower's view), not
the record of truth (Redis is)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Any

from amqp.exceptions import AMQPError
from celery import Celery
from kombu.exceptions import KombuError

from genq.names import TASK_NAME

__all__ = ["TaskEvents"]

log = logging.getLogger(__name__)

# Events buffered while the broker is away; past this, the newest are dropped (Flower would
# show stale states, the job records in Redis stay right).
_QUEUE_LIMIT = 100_000
# Events go out in batches, one AMQP message per batch (Celery's `task.multi`, which Flower's
# receiver unpacks): three messages per job cost the worker's process more CPU than all of
# genq's other per-job work. A batch is what arrived since the last one, sent at most this
# often; Flower's view lags by that much.
_BATCH_SECONDS = 0.1
_BATCH_LIMIT = 1000


class TaskEvents:
    def __init__(self, app: Celery, hostname: str) -> None:
        self._app = app
        self._hostname = hostname
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(_QUEUE_LIMIT)
        self._thread = threading.Thread(target=self._run, name="genq-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _send(self, type_: str, **fields: Any) -> None:
        with contextlib.suppress(queue.Full):  # see _QUEUE_LIMIT
            self._queue.put_nowait((type_, fields))

    def received(self, job_id: str, *, kwargs: str, retries: int) -> None:
        self._send(
            "task-received",
            uuid=job_id,
            name=TASK_NAME,
            args="()",
            kwargs=kwargs,
            retries=retries,
            root_id=job_id,
            parent_id=None,
            eta=None,
            expires=None,
        )

    def started(self, job_id: str) -> None:
        self._send("task-started", uuid=job_id)  # the dispatcher adds pid and hostname

    def succeeded(self, job_id: str, *, result: str, runtime: float) -> None:
        self._send("task-succeeded", uuid=job_id, result=result, runtime=runtime)

    def failed(self, job_id: str, *, error: str) -> None:
        self._send("task-failed", uuid=job_id, exception=error, traceback="")

    def revoked(self, job_id: str, *, expired: bool = False) -> None:
        self._send("task-revoked", uuid=job_id, terminated=False, signum=None, expired=expired)

    def _send_batch(self, dispatcher: Any) -> bool:
        """Wait for an event, send it with all that are waiting behind it as one message;
        False once stop() was called (what came before it is sent)."""
        item = self._queue.get()
        while item is not None:
            type_, fields = item
            dispatcher.send(type_, **fields)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        dispatcher.flush()
        return item is not None

    def _run(self) -> None:
        while True:
            try:
                with self._app.connection_for_write() as conn:
                    dispatcher = self._app.events.Dispatcher(
                        conn,
                        hostname=self._hostname,
                        enabled=True,
                        groups=["task"],
                        buffer_group=["task"],
                        buffer_limit=_BATCH_LIMIT,
                    )
                    while self._send_batch(dispatcher):
                        time.sleep(_BATCH_SECONDS)
                    dispatcher.flush()
                    dispatcher.close()
                    return
            except (OSError, KombuError, AMQPError) as exc:  # broker away: try again soon
                log.warning("task events: %r; retrying", exc)
                time.sleep(1.0)
            except Exception:  # a bug: logged; events are best effort, the thread goes on
                log.exception("task events failed; retrying")
                time.sleep(1.0)
