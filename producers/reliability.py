"""The reliability audit: for every accepted job, exactly one terminal state and one result.

Used by the reliability tests and by `genq chaos`, which print its line, e.g.
`accepted=300 succeeded=298 failed=2(poison) lost=0 duplicated=0`."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from genq import names
from genq.schema import JobRecord, JobState
from genq.tls import TlsSettings, redis_from_url

__all__ = ["AuditLine", "audit"]


@dataclass(frozen=True, slots=True)
class AuditLine:
    accepted: int
    succeeded: int
    failed: int
    lost: int
    """Not in a terminal state (or no record at all) when the audit ran."""
    duplicated: int
    """Succeeded, but the genq record and Celery's result disagree: two executions
    stored two different answers."""
    failed_why: Counter[str] = field(default_factory=Counter)
    """Failed jobs by the first word of their error's kind (e.g. `poison`, `malformed`)."""

    def counts(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "lost": self.lost,
            "duplicated": self.duplicated,
        }

    def __str__(self) -> str:
        why = ",".join(
            f"{k}:{v}" if len(self.failed_why) > 1 else k
            for k, v in sorted(self.failed_why.items())
        )
        failed = f"{self.failed}({why})" if why else str(self.failed)
        return (
            f"accepted={self.accepted} succeeded={self.succeeded} failed={failed} "
            f"lost={self.lost} duplicated={self.duplicated}"
        )


def audit(
    redis_url: str,
    tls: TlsSettings,
    ids: list[str],
    records: list[JobRecord | None],
    classify: dict[str, str] | None = None,
) -> AuditLine:
    """Check `records` (as read back for `ids`) against Celery's result keys.

    `classify` maps job IDs to a label for the failed count (`poison`, ...); other failed
    jobs are labelled `error`."""
    r = redis_from_url(redis_url, tls, decode_responses=True)
    try:
        duplicated = 0
        for record in records:
            if record is None or record.state is not JobState.SUCCEEDED:
                continue
            meta = r.get(names.celery_result_key(record.id))
            if meta is None or json.loads(meta)["result"]["text"] != record.text:
                duplicated += 1
    finally:
        r.close()
    present = [rec for rec in records if rec is not None]
    states = Counter(rec.state.value for rec in present)
    failed_why = Counter(
        (classify or {}).get(rec.id, "error") for rec in present if rec.state is JobState.FAILED
    )
    return AuditLine(
        accepted=len(ids),
        succeeded=states["succeeded"],
        failed=states["failed"],
        lost=sum(1 for rec in records if rec is None or not rec.done),
        duplicated=duplicated,
        failed_why=failed_why,
    )
