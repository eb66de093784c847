"""The job store's Lua scripts: one `.lua` file each, beside this module, read once at import.

Every state change of a job record that must be atomic (submit of a cacheable job, admit,
finish, cancel, hand-back, release, revive) is one of these scripts, so the client and the
worker run the same rules.

Each file opens with a header naming its KEYS and ARGV in order, for example

    -- KEYS: job, leases
    -- ARGV: job_id, now, worker, lease_expiry

and the script begins by giving each of them that name. Here each script has a `<name>_keys`
helper and a `<name>_args` helper whose keyword-only parameters are named and ordered as in
that header, so no caller counts positions (tests/unit/test_store_scripts.py holds the two
to each other). In a header, `prefixes[6]` stands for SCRIPT_PREFIXES, which the helper puts
first, and `fields[...]` for a record's field/value pairs, which it puts last."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import TypeAlias

from genq import names

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
    "Arg",
    "abandon_args",
    "abandon_keys",
    "admit_args",
    "admit_keys",
    "cancel_args",
    "cancel_keys",
    "finish_args",
    "finish_keys",
    "handback_args",
    "handback_keys",
    "lua_source",
    "release_args",
    "release_keys",
    "revive_keys",
    "submit_args",
    "submit_keys",
]

Arg: TypeAlias = str | int | float
"""One ARGV value (Redis receives it as a string)."""


def lua_source(name: str) -> str:
    """The text of `<name>.lua` in this package."""
    return (
        resources.files(__package__ or "genq.store")
        .joinpath(f"{name}.lua")
        .read_text(encoding="utf-8")
    )


SCRIPT_PREFIXES = (
    names.JOB_PREFIX,
    names.CELERY_RESULT_PREFIX,
    names.CACHE_PREFIX,
    names.FLIGHT_PREFIX,
    names.FOLLOWERS_PREFIX,
    names.LEASES,
)
"""The first arguments of SUBMIT, FINISH, CANCEL and ABANDON: the prefixes of the keys the
single-flight library (flight.lua) builds for other jobs."""

_FLIGHT = lua_source("flight")

ADMIT = lua_source("admit")
SUBMIT = _FLIGHT + lua_source("submit")
ABANDON = _FLIGHT + lua_source("abandon")
FINISH = _FLIGHT + lua_source("finish")
CANCEL = _FLIGHT + lua_source("cancel")
HANDBACK = lua_source("handback")
RELEASE = lua_source("release")
REVIVE = lua_source("revive")


def _pairs(fields: Mapping[str, str]) -> list[Arg]:
    return [item for pair in fields.items() for item in pair]


def admit_keys(job_id: str) -> list[str]:
    return [names.job_key(job_id), names.LEASES]


def admit_args(*, job_id: str, now: str, worker: str, lease_expiry: str) -> list[Arg]:
    return [job_id, now, worker, lease_expiry]


def submit_keys(job_id: str, cache_key: str) -> list[str]:
    return [
        names.job_key(job_id),
        names.cache_entry_key(cache_key),
        names.flight_key(cache_key),
        names.celery_result_key(job_id),
        names.CACHE_STATS,
    ]


def submit_args(
    *, job_id: str, ttl: int, now: str, date_done: str, fields: Mapping[str, str]
) -> list[Arg]:
    return [*SCRIPT_PREFIXES, job_id, ttl, now, date_done, *_pairs(fields)]


def abandon_keys(job_id: str) -> list[str]:
    return [names.job_key(job_id)]


def abandon_args(*, job_id: str, now: str, ttl: int, date_done: str, error: str) -> list[Arg]:
    return [*SCRIPT_PREFIXES, job_id, now, ttl, date_done, error]


def finish_keys(job_id: str) -> list[str]:
    return [names.job_key(job_id), names.LEASES, names.celery_result_key(job_id)]


def finish_args(
    *,
    job_id: str,
    ttl: int,
    celery_meta: str,
    now: str,
    date_done: str,
    result_json: str,
    promote_lease: str,
    fields: Mapping[str, str],
) -> list[Arg]:
    return [
        *SCRIPT_PREFIXES,
        job_id,
        ttl,
        celery_meta,
        now,
        date_done,
        result_json,
        promote_lease,
        *_pairs(fields),
    ]


def cancel_keys(job_id: str) -> list[str]:
    return [names.job_key(job_id), names.celery_result_key(job_id)]


def cancel_args(
    *,
    job_id: str,
    now: str,
    ttl: int,
    celery_meta: str,
    cancel_channel: str,
    date_done: str,
    promote_lease: str,
) -> list[Arg]:
    return [
        *SCRIPT_PREFIXES,
        job_id,
        now,
        ttl,
        celery_meta,
        cancel_channel,
        date_done,
        promote_lease,
    ]


def handback_keys(job_id: str) -> list[str]:
    return [names.job_key(job_id), names.LEASES]


def handback_args(*, job_id: str, lease: str) -> list[Arg]:
    return [job_id, lease]


def release_keys(job_id: str) -> list[str]:
    return [names.job_key(job_id), names.LEASES]


def release_args(*, job_id: str, lease: str) -> list[Arg]:
    return [job_id, lease]


def revive_keys(job_id: str) -> list[str]:
    return [names.job_key(job_id), names.celery_result_key(job_id)]
