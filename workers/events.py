"""Celery task events, so Flower lists every job as received / started / succeeded / failed.

Sent from a thread of their own through Celery's event dispatcher: publishing must never
stall the event loop that feeds the engine, and events are best effort (Flower's view), not
the record of truth (Redis is)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from celery import Celery

from genq.names import TASK_NAME

__all__ = ["TaskEvents"]

log = logging.getLogger(__name__)

# Events buffered while the broker is away; past this, the oldest are dropped (Flower would
# show stale states, the job records in Redis stay right).
_QUEUE_LIMIT = 100_000


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
        try:
            self._queue.put_nowait((type_, fields))
        except queue.Full:
            pass  # see _QUEUE_LIMIT

    def received(self, job_id: str, *, kwargs: str, retries: int) -> None:
        self._send("task-received", uuid=job_id, name=TASK_NAME, args="()", kwargs=kwargs,
                   retries=retries, root_id=job_id, parent_id=None, eta=None, expires=None)

    def started(self, job_id: str) -> None:
        self._send("task-started", uuid=job_id)  # the dispatcher adds pid and hostname

    def succeeded(self, job_id: str, *, result: str, runtime: float) -> None:
        self._send("task-succeeded", uuid=job_id, result=result, runtime=runtime)

    def failed(self, job_id: str, *, error: str) -> None:
        self._send("task-failed", uuid=job_id, exception=error, traceback="")

    def revoked(self, job_id: str, *, expired: bool = False) -> None:
        self._send("task-revoked", uuid=job_id, terminated=False, signum=None, expired=expired)

    def _run(self) -> None:
        while True:
            try:
                with self._app.connection_for_write() as conn:
                    dispatcher = self._app.events.Dispatcher(
                        conn, hostname=self._hostname, enabled=True, groups=["task"]
                    )
                    while True:
                        item = self._queue.get()
                        if item is None:
                            dispatcher.close()
                            return
                        type_, fields = item
                        dispatcher.send(type_, **fields)
            except Exception as exc:  # broker away: keep what is queued, try again soon
                log.warning("task events: %r; retrying", exc)
                time.sleep(1.0)
