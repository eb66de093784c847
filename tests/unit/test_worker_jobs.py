"""The worker's job state machine, driven through its public seams with stubs around it.

Admission, credit and the runner are the real classes (workers/admission.py, credit.py,
running.py); the ledger (Redis), the engine, the broker link and the courier are stubs
that record what the worker asked of them. The same paths run against real services in
tests/integration (test_fleet's cancels, test_redis_restart's failed admissions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.exceptions

from genq.protocol import encode_task
from genq.schema import JobSpec, JobState
from genq.settings import WorkerSettings
from scheduler import create_admission_queue
from scheduler.refill import RefillWatch
from workers.admission import Admission
from workers.broker import Delivery
from workers.credit import Credit
from workers.engine import Generation
from workers.jobs import JobTable, Phase
from workers.observers import Observer, Observers, Stats
from workers.progress import Progress
from workers.running import Runner


class _Ledger:
    def __init__(self) -> None:
        self.replies: dict[str, str] = {}
        self.fault: BaseException | None = None
        self.hold: asyncio.Event | None = None
        """While set to an unset event, ADMIT replies wait for it (they are on their way)."""
        self.ended: dict[str, tuple[JobState, dict[str, Any]]] = {}

    async def admit(self, job_ids: list[str]) -> list[str]:
        if self.hold is not None:
            await self.hold.wait()
        if self.fault is not None:
            raise self.fault
        return [self.replies.get(job_id, "running") for job_id in job_ids]

    async def finish(self, job_id: str, state: JobState, **fields: Any) -> str:
        self.ended[job_id] = (state, fields)
        return "ok"


class _Engine:
    dead = False

    def __init__(self) -> None:
        self.started: list[str] = []
        self.behaviour: Callable[[str], Awaitable[None]] | None = None

    def render_soon(self, spec: JobSpec) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(spec.prompt)
        return future

    async def generate(
        self, job_id: str, spec: JobSpec, on_delta: Any = None, *, prompt: Any = None
    ) -> Generation:
        self.started.append(job_id)
        await asyncio.sleep(0)
        if self.behaviour is not None:
            await self.behaviour(job_id)
        return Generation(text="ok", finish_reason="length", prompt_tokens=2, completion_tokens=4)


class _Broker:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.requeued: list[int] = []

    def ack(self, epoch: int, tag: int) -> None:
        self.acked.append(tag)

    def requeue(self, epoch: int, tag: int) -> None:
        self.requeued.append(tag)

    def surge(self, prefetch: int) -> None:
        pass


class _Courier:
    def __init__(self) -> None:
        self.handed_back: list[tuple[str, int]] = []
        self.dead: list[tuple[str | None, str]] = []

    async def hand_back(self, message: Any, *, attempts: int, crashed: bool = False) -> None:
        self.handed_back.append((message.job_id, attempts))

    async def dead_letter(
        self, headers: Any, body: bytes, *, reason: str, attempts: int, job_id: str | None
    ) -> None:
        self.dead.append((job_id, reason))

    async def reap(self) -> int:
        return 0


class _Flower(Observer):
    """What Flower would be told, as (event, job)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def started(self, job: Any) -> None:
        self.seen.append(("started", job.job_id))

    def revoked(self, job_id: str, *, expired: bool = False) -> None:
        self.seen.append(("expired" if expired else "revoked", job_id))

    def failed(self, job_id: str, *, error: str) -> None:
        self.seen.append(("failed", job_id))


class _Worker:
    """The worker's parts wired as the consumer wires them, around the stubs."""

    def __init__(self, capacity: int = 4) -> None:
        settings = WorkerSettings()
        self.jobs = JobTable()
        self.stats = Stats()
        self.flower = _Flower()
        self.ledger = _Ledger()
        self.engine = _Engine()
        self.broker = _Broker()
        self.courier = _Courier()
        self.wake = asyncio.Event()
        observers = Observers(self.stats, self.flower)
        queue = create_admission_queue(
            settings.policy,
            fair_levels=settings.fair_levels,
            alpha=settings.alpha,
            beta=settings.beta,
        )
        refill = RefillWatch(settings.refill_wait)
        stubs: dict[str, Any] = dict(ledger=self.ledger, engine=self.engine, courier=self.courier)
        self.credit = Credit(
            settings=settings,
            capacity=capacity,
            jobs=self.jobs,
            queue=queue,
            refill=refill,
            broker=self.broker,  # type: ignore[arg-type]
            observers=observers,
            wake=self.wake,
            accepting=lambda: True,
        )
        self.runner = Runner(
            settings=settings,
            model="m",
            jobs=self.jobs,
            queue=queue,
            progress=Progress(None),  # type: ignore[arg-type]
            observers=observers,
            wake=self.wake,
            die=lambda exc: None,
            **stubs,
        )
        self.admission = Admission(
            settings=settings,
            jobs=self.jobs,
            queue=queue,
            refill=refill,
            credit=self.credit,
            runner=self.runner,
            progress=Progress(None),  # type: ignore[arg-type]
            broker=self.broker,  # type: ignore[arg-type]
            observers=observers,
            wake=self.wake,
            accepting=lambda: True,
            **stubs,
        )

    def deliver(self, job_id: str, tag: int) -> None:
        headers, body = encode_task(
            JobSpec(model="m", prompt="hi", max_tokens=4),
            job_id=job_id,
            enqueued_at=time.time(),
            deadline_at=None,
        )
        self.admission.on_delivery(Delivery(epoch=1, tag=tag, level=0, headers=headers, body=body))

    def phase(self, job_id: str) -> Phase | None:
        job = self.jobs.get(job_id)
        return None if job is None else job.phase

    async def settle(self) -> None:
        """Let every task the worker started run to where it waits."""
        for _ in range(20):
            await asyncio.sleep(0)


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_a_delivered_job_is_admitted_run_and_recorded() -> None:
    async def scenario() -> None:
        w = _Worker()
        w.deliver("a", tag=1)
        assert w.phase("a") is Phase.HELD and w.broker.acked == []
        await w.admission.admit_ready()
        await w.settle()
        assert w.ledger.ended["a"][0] is JobState.SUCCEEDED
        assert w.broker.acked == [1] and len(w.jobs) == 0
        assert (w.stats["admitted"], w.stats["succeeded"]) == (1, 1)
        assert w.flower.seen == [("started", "a")]

    _run(scenario)


@pytest.mark.parametrize("phase", [Phase.HELD, Phase.ADMITTING, Phase.RUNNING])
def test_a_second_copy_of_a_job_at_hand_is_acked_in_every_phase(phase: Phase) -> None:
    async def scenario() -> None:
        w = _Worker()
        w.deliver("a", tag=1)
        release = asyncio.Event()
        if phase is Phase.ADMITTING:
            w.ledger.hold = release
        if phase is Phase.RUNNING:
            w.engine.behaviour = lambda _id: release.wait()  # type: ignore[assignment,return-value]
        if phase is not Phase.HELD:
            admitting = asyncio.ensure_future(w.admission.admit_ready())
            await w.settle()
        assert w.phase("a") is phase
        w.deliver("a", tag=2)  # a republish that raced the original
        assert w.broker.acked[-1:] == [2] and len(w.jobs) == 1
        release.set()
        if phase is not Phase.HELD:
            await admitting
            await w.settle()
            assert w.ledger.ended["a"][0] is JobState.SUCCEEDED
            assert w.stats["admitted"] == 1

    _run(scenario)


def test_a_cancel_while_held_is_left_to_admit() -> None:
    async def scenario() -> None:
        w = _Worker()
        w.deliver("a", tag=1)
        w.runner.cancel("a")  # ADMIT will find the record cancelled
        assert w.phase("a") is Phase.HELD
        w.ledger.replies["a"] = "cancelled"
        await w.admission.admit_ready()
        await w.settle()
        assert len(w.jobs) == 0 and w.broker.acked == [1] and "a" not in w.ledger.ended
        assert w.stats["admitted"] == 0

    _run(scenario)


def test_a_cancel_arriving_before_admits_reply_ends_the_job_instead_of_running_it() -> None:
    async def scenario() -> None:
        w = _Worker()
        w.ledger.hold = asyncio.Event()
        w.deliver("a", tag=1)
        admitting = asyncio.ensure_future(w.admission.admit_ready())
        await w.settle()
        assert w.phase("a") is Phase.ADMITTING and w.engine.started == ["a"]  # early start
        # ADMIT has run in Redis (the job is `running` there); its reply is not back yet.
        w.runner.cancel("a")
        w.ledger.hold.set()
        await admitting
        await w.settle()
        assert w.ledger.ended["a"] == (
            JobState.CANCELLED,
            {"error": "cancelled by the client while running"},
        )
        assert len(w.jobs) == 0 and w.broker.acked == [1]
        assert w.stats["early_aborted"] == 1 and w.stats["admitted"] == 0
        assert w.flower.seen == [("revoked", "a")]

    _run(scenario)


def test_a_cancel_of_a_running_job_aborts_it_and_records_the_cancel() -> None:
    async def scenario() -> None:
        w = _Worker()
        w.engine.behaviour = lambda _id: asyncio.Event().wait()  # type: ignore[assignment,return-value]
        w.deliver("a", tag=1)
        await w.admission.admit_ready()
        await w.settle()
        assert w.phase("a") is Phase.RUNNING
        w.runner.cancel("a")
        await w.settle()
        assert w.ledger.ended["a"][0] is JobState.CANCELLED and len(w.jobs) == 0
        assert w.flower.seen == [("started", "a"), ("revoked", "a")]
        assert w.courier.handed_back == []

    _run(scenario)


def test_a_cancel_right_after_admission_still_ends_the_job_and_frees_its_slot() -> None:
    async def scenario() -> None:
        w = _Worker()
        w.engine.behaviour = lambda _id: asyncio.Event().wait()  # type: ignore[assignment,return-value]
        w.deliver("a", tag=1)
        await w.admission.admit_ready()
        w.runner.cancel("a")  # before the job's task took its first step
        await w.settle()
        assert w.ledger.ended["a"][0] is JobState.CANCELLED and len(w.jobs) == 0
        assert w.credit.room() == 4

    _run(scenario)


@pytest.mark.parametrize(
    ("reply", "ended", "dead"),
    [
        ("leased", None, False),
        ("succeeded", None, False),
        ("expired", JobState.EXPIRED, False),
        ("missing", None, True),
    ],
)
def test_what_admit_decides_for_a_job_that_does_not_run_here(
    reply: str, ended: JobState | None, dead: bool
) -> None:
    async def scenario() -> None:
        w = _Worker()
        w.ledger.replies["a"] = reply
        w.deliver("a", tag=1)
        await w.admission.admit_ready()
        await w.settle()
        assert w.broker.acked == [1] and len(w.jobs) == 0
        assert w.ledger.ended.get("a", (None,))[0] is ended
        assert bool(w.courier.dead) is dead and w.stats["dead_lettered"] == int(dead)
        assert w.stats["admitted"] == 0 and w.stats["early_aborted"] == 1

    _run(scenario)


def test_when_redis_is_away_the_batch_goes_back_and_a_redelivery_is_not_a_copy() -> None:
    async def scenario() -> None:
        w = _Worker()
        w.ledger.fault = redis.exceptions.ConnectionError("refused")
        w.deliver("a", tag=1)
        task = asyncio.ensure_future(w.admission.admit_ready())
        await w.settle()
        assert w.broker.requeued == [1] and len(w.jobs) == 0 and w.broker.acked == []
        w.deliver("a", tag=2)  # the broker hands it back at once: a job, not a copy
        assert w.phase("a") is Phase.HELD
        task.cancel()

    _run(scenario)


def test_a_bug_in_admission_fails_the_jobs_instead_of_looping_them() -> None:
    async def scenario() -> None:
        w = _Worker()
        w.ledger.fault = TypeError("a bug")
        w.deliver("a", tag=1)
        await w.admission.admit_ready()
        await w.settle()
        assert w.broker.requeued == [] and w.broker.acked == [1] and len(w.jobs) == 0
        state, fields = w.ledger.ended["a"]
        assert state is JobState.FAILED and "a bug" in fields["error"]
        assert [job_id for job_id, _ in w.courier.dead] == ["a"]
        assert (w.stats["failed"], w.stats["dead_lettered"]) == (1, 1)

    _run(scenario)


def test_a_passing_engine_error_hands_the_job_back_and_counts_it() -> None:
    async def scenario() -> None:
        w = _Worker()

        async def flaky(_job_id: str) -> None:
            raise RuntimeError("engine hiccup")

        w.engine.behaviour = flaky
        w.deliver("a", tag=1)
        await w.admission.admit_ready()
        await w.settle()
        assert w.courier.handed_back == [("a", 1)] and "a" not in w.ledger.ended
        assert w.stats["handed_back"] == 1 and len(w.jobs) == 0

    _run(scenario)
