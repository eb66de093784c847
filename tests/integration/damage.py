"""What the damage tests (test_reliability, test_poison) share: a batch of jobs of every
level, waiting until a victim worker is mid-run, and the audit every one of them ends with."""

from __future__ import annotations

from genq.local import WorkerProcess, wait_for
from genq.schema import JobState
from producers import Client
from producers.reliability import AuditLine

JOBS = 300


def submit_batch(client: Client, model: str, *, max_tokens: int) -> list[str]:
    return client.submit_many(
        [
            {
                "model": model,
                "prompt": f"job {i}",
                "priority": i % 10,
                "max_tokens": max_tokens,
                "ignore_eos": True,
            }
            for i in range(JOBS)
        ]
    )


def wait_until_running(
    client: Client, ids: list[str], victim: WorkerProcess, *, timeout: float
) -> None:
    """Until the victim runs at least two jobs (and holds more unstarted)."""
    wait_for(
        lambda: (
            sum(
                1
                for r in client.status_many(ids)
                if r.worker == victim.hostname and r.state is JobState.RUNNING
            )
            >= 2
        ),
        timeout=timeout,
        what="the victim to be running jobs",
    )


def assert_all_succeeded_once(line: AuditLine, jobs: int = JOBS) -> None:
    assert line.counts() == {
        "accepted": jobs,
        "succeeded": jobs,
        "failed": 0,
        "lost": 0,
        "duplicated": 0,
    }, str(line)
