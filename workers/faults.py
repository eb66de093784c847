"""Which errors mean "Redis is away, try again" rather than "a bug".

The worker rides out a Redis restart, a failover, a full Redis: those raise the errors
below, and the loops that meet them wait and retry. Anything else (a TypeError, a Lua
script error) is a bug: retried, it would fail the same way forever, so the callers log it
with its traceback and surface it on the job instead."""

from __future__ import annotations

import redis.exceptions as rx

__all__ = ["REDIS_AWAY"]

REDIS_AWAY: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # refused, reset, LOADING (BusyLoadingError), MASTERDOWN
    rx.TimeoutError,
    rx.ReadOnlyError,  # a replica, mid-failover
    rx.OutOfMemoryError,  # maxmemory reached: frees up as results expire
    rx.TryAgainError,
    OSError,
)
