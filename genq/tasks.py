"""Stopping the background tasks every long-lived component runs (readers, writers,
batchers): cancelled, and awaited, so nothing of theirs runs after `stop()` returns."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["stop_tasks"]


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks given (None: never started) and wait until each has ended."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
