"""The Redis job store: one hash per job, plus Celery's result key so `AsyncResult` works.

Every state change that must be atomic (submit of a cacheable job, admit, finish, cancel,
republish) is a Lua script (scripts.py, and a `.lua` file each), so the client and the worker
run the same rules: a terminal state is final and the first result stored wins, which is what
makes "exactly one stored result per job" hold when a job runs twice after a worker died. The
result cache and single flight live in the same scripts (flight.lua).

- records.py: the job record's fields, written at submit and read back;
- results.py: the Celery result value;
- scripts.py: the Lua scripts and the helpers that name their KEYS and ARGV;
- jobstore.py: `JobStore`, the client's side (the worker's is workers/ledger.py)."""

from __future__ import annotations

from genq.store.jobstore import Created, JobStore
from genq.store.records import decode_record, new_record_fields
from genq.store.results import celery_meta, date_done
from genq.store.scripts import (
    ABANDON,
    ADMIT,
    CANCEL,
    FINISH,
    HANDBACK,
    RELEASE,
    REVIVE,
    SCRIPT_PREFIXES,
    SUBMIT,
)

__all__ = [
    "ABANDON",
    "ADMIT",
    "CANCEL",
    "FINISH",
    "HANDBACK",
    "RELEASE",
    "REVIVE",
    "SCRIPT_PREFIXES",
    "SUBMIT",
    "Created",
    "JobStore",
    "celery_meta",
    "date_done",
    "decode_record",
    "new_record_fields",
]
