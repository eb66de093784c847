"""genq's errors, one root, branching by subsystem.

GenqError
├── ValidationError        a request or setting is invalid (names the field and the limit)
├── NotFoundError          no job with that ID (never reads as "pending forever")
├── BrokerError            RabbitMQ
│   └── PublishError       a publish was not confirmed: the job was NOT accepted
├── StoreError             Redis
├── JobError               a job ended in a non-success state (raised by result())
│   ├── JobFailedError
│   ├── JobCancelledError
│   └── JobExpiredError
├── TimeoutError           waiting for a result took longer than asked
└── EngineError            the vLLM engine
    ├── RequestRejectedError   this request cannot run (prompt over the context): not retried
    └── EngineDeadError        the engine is gone: the worker must exit (fatal)
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "EngineDeadError",
    "EngineError",
    "GenqError",
    "JobCancelledError",
    "JobError",
    "JobExpiredError",
    "JobFailedError",
    "NotFoundError",
    "PublishError",
    "RequestRejectedError",
    "StoreError",
    "TimeoutError",
    "ValidationError",
]


class GenqError(Exception):
    """Root of every error genq raises on purpose."""


class ValidationError(GenqError, ValueError):
    """A request is invalid. `field` names what is wrong; the message says the limit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(GenqError, KeyError):
    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else "not found"


class BrokerError(GenqError):
    pass


class PublishError(BrokerError):
    """The broker did not confirm a publish. The job was not accepted; retrying is safe.

    A batch may fail part-way: `accepted` holds the IDs that were accepted all the same (at
    the positions `accepted_positions` of the submitted requests), and `unaccepted` the
    positions of those that were not, to retry. The publisher sets `confirmed`: the
    positions of the messages the broker did confirm."""

    def __init__(
        self,
        message: str,
        *,
        confirmed: list[int] | None = None,
        accepted: list[str] | None = None,
        unaccepted: list[int] | None = None,
        accepted_positions: list[int] | None = None,
    ) -> None:
        super().__init__(message)
        self.confirmed = confirmed or []
        self.accepted = accepted or []
        self.unaccepted = unaccepted or []
        self.accepted_positions = accepted_positions or []


class StoreError(GenqError):
    pass


class JobError(GenqError):
    def __init__(self, message: str, *, job_id: str, state: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state


class JobFailedError(JobError):
    pass


class JobCancelledError(JobError):
    pass


class JobExpiredError(JobError):
    pass


class TimeoutError(GenqError):  # noqa: A001 - deliberately genq.errors.TimeoutError
    pass


class EngineError(GenqError):
    pass


class RequestRejectedError(EngineError):
    """Recoverable for the worker, final for the job: running it again would fail again."""


class EngineDeadError(EngineError):
    """Fatal: the engine process is gone. The worker hands back its jobs and exits non-zero."""
