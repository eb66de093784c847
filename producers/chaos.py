"""`genq chaos`: do real damage to a running fleet, then audit every job it submitted.

It submits N jobs to a model, does the damage a scenario names, waits for every job to end
and prints the reliability audit line (producers/reliability.py), e.g.
`accepted=301 succeeded=300 failed=1(poison) lost=0 duplicated=0`.

Scenarios (workers are found from their heartbeats, `genq:worker:<name>`, which carry the
host, the worker's PID and its engine core's PID; only workers on this host can be hit):
- `kill`: kill -9 a worker that is running jobs, and its engine core, as a crash would;
- `engine`: kill -9 a worker's engine core: the worker must hand its jobs back and exit 70;
- `sigterm`: SIGTERM a worker: it finishes what it can within its grace period, hands back
  the rest and exits 0;
- `poison`: one more job, which "crashes the engine every time it runs": whenever it is
  running on a worker here, that worker's engine core is killed. It must end `failed`,
  dead-lettered, after GENQ_MAX_ATTEMPTS attempts, while every other job succeeds;
- `malformed`: publish messages that are not genq jobs (and one whose job record exists):
  each is dead-lettered with its reason, the job with a record fails, the workers go on.

A killed worker comes back through its supervisor, or through `restart_cmd` (run once per
worker that went down). Producers never import worker code: all of this goes through
Redis, RabbitMQ and signals, as an operator's tools would."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pika

from genq import names
from genq.errors import GenqError, NotFoundError, TimeoutError  # noqa: A004 - genq's own
from genq.schema import JobRecord, JobState
from producers.client import Client
from producers.reliability import AuditLine, audit

__all__ = ["SCENARIOS", "ChaosError", "WorkerInfo", "fleet_workers", "run_chaos", "worker_info"]

SCENARIOS = ("kill", "engine", "sigterm", "poison", "malformed")

# How often the chaos agent looks at the jobs and workers it is watching (seconds).
_POLL = 0.05

T = TypeVar("T")


class ChaosError(GenqError):
    """The scenario could not do its damage (no worker of the model on this host, ...)."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker, as its heartbeat describes it."""

    name: str
    model: str
    host: str
    pid: int
    engine_pid: int | None
    running: int

    @property
    def local(self) -> bool:
        """On this host, and its process still there: one this agent can signal."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def worker_info(client: Client, name: str) -> WorkerInfo | None:
    """A worker by its name (a job record's `worker`), if its heartbeat is fresh."""
    raw: dict[str, str] = client.store.redis.hgetall(  # type: ignore[assignment]
        names.worker_stats_key(name)
    )
    if not raw.get("pid"):
        return None
    engine = raw.get("engine_pid") or ""
    return WorkerInfo(
        name=name,
        model=raw.get("model", ""),
        host=raw.get("host", ""),
        pid=int(raw["pid"]),
        engine_pid=int(engine) if engine.isdigit() else None,
        running=int(raw.get("running", 0) or 0),
    )


def fleet_workers(client: Client, model: str) -> list[WorkerInfo]:
    """Workers of `model` whose heartbeat is fresh (a dead worker's key expires in seconds).
    It scans Redis's keys: seconds on a big keyspace, so only to look, never in a race."""
    found = []
    prefix = names.WORKER_STATS_PREFIX
    for key in client.store.redis.scan_iter(match=f"{prefix}*", count=1000):
        info = worker_info(client, str(key).removeprefix(prefix))
        if info is not None and info.model == model:
            found.append(info)
    return found


def _signal(pid: int | None, sig: int) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _gone(pid: int) -> bool:
    """The process has exited: no such PID, or a zombie its parent has not reaped yet (a
    supervisor, a test: not this agent's business)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@dataclass
class Chaos:
    """One run: the jobs it submitted, the damage it did, what it restarted."""

    client: Client
    model: str
    restart_cmd: str | None = None
    say: Callable[[str], None] = print
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.restarted: list[subprocess.Popen[bytes]] = []

    # -- finding and hitting workers ------------------------------------------------------

    def running_victim(self, ids: list[str]) -> WorkerInfo:
        """A worker on this host that is running some of our jobs right now."""

        def find() -> WorkerInfo | None:
            names_running = {
                r.worker
                for r in _records(self.client, ids)
                if r and r.state is JobState.RUNNING and r.worker
            }
            for name in names_running:
                info = worker_info(self.client, name)
                if info is not None and info.local:
                    return info
            return None

        return self.wait(find, "a worker on this host running the submitted jobs")

    def wait(self, predicate: Callable[[], T | None], what: str) -> T:
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > self.deadline:
                raise ChaosError(f"timed out waiting for {what}")
            time.sleep(_POLL)

    def wait_exit(self, worker: WorkerInfo, what: str) -> None:
        self.wait(lambda: _gone(worker.pid), f"worker {worker.name} to exit ({what})")
        self.say(f"chaos: worker {worker.name} (pid {worker.pid}) exited")

    def restart(self) -> None:
        """Bring a worker back with `restart_cmd`; without one, a supervisor must."""
        if not self.restart_cmd:
            return
        self.restarted.append(
            subprocess.Popen(
                shlex.split(self.restart_cmd),
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        self.say(f"chaos: restarted a worker (pid {self.restarted[-1].pid}): {self.restart_cmd}")

    def kill_engine(self, worker: WorkerInfo) -> None:
        if worker.engine_pid is None:
            raise ChaosError(f"worker {worker.name} publishes no engine_pid in its heartbeat")
        _signal(worker.engine_pid, signal.SIGKILL)
        self.say(f"chaos: killed the engine core (pid {worker.engine_pid}) of {worker.name}")
        self.wait_exit(worker, "its engine died")

    # -- scenarios --------------------------------------------------------------------------

    def kill(self, ids: list[str]) -> None:
        victim = self.running_victim(ids)
        _signal(victim.pid, signal.SIGKILL)
        _signal(victim.engine_pid, signal.SIGKILL)  # a crash takes the engine with it
        self.say(f"chaos: kill -9 worker {victim.name} (pid {victim.pid})")
        self.wait_exit(victim, "kill -9")
        self.restart()

    def engine(self, ids: list[str]) -> None:
        self.kill_engine(self.running_victim(ids))
        self.restart()

    def sigterm(self, ids: list[str]) -> None:
        victim = self.running_victim(ids)
        _signal(victim.pid, signal.SIGTERM)
        self.say(f"chaos: SIGTERM worker {victim.name} (pid {victim.pid})")
        self.wait_exit(victim, "SIGTERM")
        self.restart()

    def poison(self, poison_id: str) -> int:
        """Kill the engine of whichever worker here runs the poison job, until it ends;
        returns how many engines it took."""
        kills = 0
        while True:

            def running_here() -> WorkerInfo | JobRecord | None:
                record = self.client.status(poison_id)
                if record.done:
                    return record
                if record.state is JobState.RUNNING and record.worker:
                    info = worker_info(self.client, record.worker)
                    if info is not None and info.local:
                        return info
                return None

            # A cast: mypy infers the wait's type as the join of the two (object).
            found = cast(
                "WorkerInfo | JobRecord",
                self.wait(running_here, "the poison job to run on a worker here"),
            )
            if isinstance(found, JobRecord):
                self.say(
                    f"chaos: poison job {poison_id} ended {found.state.value} after "
                    f"{found.attempts} attempts: {found.error}"
                )
                return kills
            self.kill_engine(found)
            kills += 1
            self.restart()

    def malformed(self) -> str:
        """Publish bodies that are not genq jobs; returns the ID of the one that has a job
        record (it must end failed, not pend forever)."""
        broken_id = uuid.uuid4().hex
        self.client.store.create(
            [
                {
                    "id": broken_id,
                    "state": JobState.QUEUED.value,
                    "model": self.model,
                    "priority": "0",
                    "tenant": self.client.settings.default_tenant,
                    "enqueued_at": repr(time.time()),
                    "attempts": "0",
                }
            ]
        )
        bad: list[tuple[dict[str, Any] | None, bytes]] = [
            ({"task": names.TASK_NAME, "id": broken_id}, b"{not json"),
            (None, b"no headers at all"),
            ({"task": "someone.elses.task", "id": uuid.uuid4().hex}, b"[[], {}, {}]"),
            ({"task": names.TASK_NAME, "id": uuid.uuid4().hex}, b'[[], {"spec": 7}, {}]'),
        ]
        conn = pika.BlockingConnection(pika.URLParameters(self.client.settings.broker_url))
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            for headers, body in bad:
                channel.basic_publish(
                    names.EXCHANGE,
                    names.level_routing_key(self.model, 0),
                    body,
                    pika.BasicProperties(headers=headers, delivery_mode=2),
                )
        finally:
            conn.close()
        self.say(f"chaos: published {len(bad)} malformed messages to {self.model}")
        return broken_id


def _records(client: Client, ids: list[str]) -> list[JobRecord | None]:
    """Every job's record, None for one that has none (lost)."""
    try:
        return list(client.status_many(ids))
    except NotFoundError:
        out: list[JobRecord | None] = []
        for job_id in ids:
            try:
                out.append(client.status(job_id))
            except NotFoundError:
                out.append(None)
        return out


def run_chaos(
    client: Client,
    *,
    model: str,
    scenario: str,
    jobs: int = 300,
    max_tokens: int = 32,
    poison_tokens: int = 256,
    restart_cmd: str | None = None,
    timeout: float = 1800.0,
    say: Callable[[str], None] = print,
) -> AuditLine:
    """Submit `jobs` jobs to `model`, do `scenario`'s damage, wait, audit (see the module)."""
    if scenario not in SCENARIOS:
        raise ChaosError(f"scenario: {scenario!r} is not one of {', '.join(SCENARIOS)}")
    chaos = Chaos(
        client, model, restart_cmd=restart_cmd, say=say, deadline=time.monotonic() + timeout
    )
    if not [w for w in fleet_workers(client, model) if w.local] and scenario != "malformed":
        raise ChaosError(f"no worker of {model} runs on this host ({socket.gethostname()})")
    ids = client.submit_many(
        [
            {
                "model": model,
                "prompt": f"chaos {scenario} {i}",
                "priority": i % client.settings.levels,
                "max_tokens": max_tokens,
                "ignore_eos": True,
            }
            for i in range(jobs)
        ]
    )
    say(f"chaos: submitted {jobs} jobs to {model}")
    classify: dict[str, str] = {}
    if scenario == "poison":
        # Long and urgent: it starts early and runs long enough to be caught running.
        poison_id = client.submit(
            "poison",
            model=model,
            priority=client.settings.levels - 1,
            max_tokens=poison_tokens,
            ignore_eos=True,
        )
        ids.append(poison_id)
        classify[poison_id] = "poison"
        chaos.poison(poison_id)
    elif scenario == "malformed":
        broken_id = chaos.malformed()
        ids.append(broken_id)
        classify[broken_id] = "malformed"
    else:
        getattr(chaos, scenario)(ids)
    try:
        records: list[JobRecord | None] = list(
            client.wait_many(ids, timeout=max(1.0, chaos.deadline - time.monotonic()))
        )
    except (TimeoutError, NotFoundError):
        records = _records(client, ids)
    return audit(client.settings.redis_url, client.settings, ids, records, classify=classify)
