"""The Celery app every genq worker runs, and the bootstep that owns the GPU consumer.

`genq worker` is `celery worker` with one more bootstep: Celery keeps doing what Celery
does (remote control, so `celery inspect ping` answers; worker heartbeats and events, so
Flower sees the fleet; warm shutdown on SIGTERM), while the GPU consumer takes the jobs.
The solo pool is deliberate: the engine lives once per process, and Celery's own task
consumer has nothing to run (it listens on a per-worker queue nobody publishes to)."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery, bootsteps
from kombu.entity import Queue

from genq import names
from genq.settings import WorkerSettings
from genq.tls import celery_ssl
from workers.consumer import GpuConsumer

__all__ = ["EXIT_ENGINE_DEAD", "GpuConsumerStep", "create_app", "run_worker"]

EXIT_ENGINE_DEAD = 70
"""Exit status when the engine died: the worker's supervisor should restart it."""

log = logging.getLogger(__name__)

# pika logs every connection step at INFO; only its warnings matter in a worker's log.
logging.getLogger("pika").setLevel(logging.WARNING)


class GpuConsumerStep(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery: untyped
    """Starts the engine and the GPU consumer with the worker; stops them on shutdown
    (a worker that doesn't shut its engine down hangs and leaves vLLM processes behind)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.consumer: GpuConsumer | None = None

    def start(self, worker: Any) -> None:
        conf = worker.app.conf
        if not conf.get("genq_engine_args"):
            raise RuntimeError(
                "no engine configured: start workers with `genq worker --model PATH`"
            )
        self.consumer = GpuConsumer(
            settings=conf.genq_settings,
            engine_args=conf.genq_engine_args,
            served_model=conf.genq_served_model,
            app=worker.app,
            hostname=worker.hostname,
            on_fatal=_exit_engine_dead,
        )
        self.consumer.start()

    def stop(self, worker: Any) -> None:
        if self.consumer is not None:
            self.consumer.stop()

    shutdown = stop


def _exit_engine_dead(error: BaseException) -> None:
    """The engine is gone and its jobs are handed back: exit, so a supervisor restarts a
    whole worker. Called on the consumer's thread; Celery gives no way to set its exit
    status from another thread, hence `os._exit`."""
    log.critical("engine dead (%s); exiting with status %d", error, EXIT_ENGINE_DEAD)
    logging.shutdown()
    os._exit(EXIT_ENGINE_DEAD)


def create_app(settings: WorkerSettings) -> Celery:
    celery = Celery("genq", broker=settings.broker_url, backend=settings.redis_url)
    celery.conf.update(
        worker_send_task_events=True,  # Flower lists jobs from these
        task_send_sent_event=False,
        accept_content=["json"],
        result_serializer="json",
        task_serializer="json",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        # Quieter Celery: per-job CPU in this process competes with the engine's scheduler.
        worker_disable_rate_limits=True,
        worker_enable_remote_control=True,
        result_expires=settings.job_ttl,
    )
    celery.conf.update(celery_ssl(settings.broker_url, settings.redis_url, settings))
    celery.steps["worker"].add(GpuConsumerStep)
    return celery


def run_worker(
    settings: WorkerSettings,
    *,
    engine_args: Any,
    served_model: str,
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> None:
    """Run a Celery worker in this process, serving `served_model` with `engine_args`."""
    worker_app = create_app(settings)
    worker_app.conf.genq_settings = settings
    worker_app.conf.genq_engine_args = engine_args
    worker_app.conf.genq_served_model = served_model
    name = hostname or f"genq-{os.getpid()}@{socket.gethostname()}"
    # Gone with the worker: a durable queue per worker name (they include the PID) was
    # left behind by every worker that ever ran.
    worker_app.conf.task_queues = [
        Queue(
            names.idle_queue(name),
            durable=False,  # type: ignore[no-untyped-call]
            auto_delete=True,
        )
    ]
    worker_app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--task-events",
            f"--hostname={name}",
            f"--queues={names.idle_queue(name)}",
            f"--loglevel={loglevel}",
            "--without-mingle",
            "--without-gossip",
        ]
    )
