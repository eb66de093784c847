"""How many requests one gateway holds open waiting on jobs, and the 503 past that.

A waiting request costs the gateway a little memory and a watch (no Redis connection: see
waiter.py and streams.py), so the limit is high; it exists so that a flood is refused
cleanly rather than exhausting the process. A request takes its place *before* any job is
submitted and keeps it until its response is complete: when the gateway is full the client
hears 503 with Retry-After and nothing was accepted; once accepted, a request is never
refused, and a stream never cut, for lack of room."""

from __future__ import annotations

from genq.settings import GatewaySettings
from producers.gateway.errors import ApiError
from producers.gateway.metrics import Metrics

__all__ = ["Capacity"]


class Capacity:
    def __init__(self, settings: GatewaySettings, metrics: Metrics) -> None:
        self._limit = settings.max_waiting
        self._retry_after = settings.retry_after
        self._metrics = metrics
        self.held = 0

    def take(self) -> None:
        """A place for one waiting request, or 503 (nothing accepted yet)."""
        if self.held >= self._limit:
            self._metrics.rejected.labels("waiting").inc()
            raise ApiError(
                503,
                f"the gateway holds {self.held} waiting requests, its limit "
                f"(GENQ_MAX_WAITING); nothing was accepted, retry shortly",
                code="gateway_busy",
                type="server_error",
                headers={"Retry-After": str(self._retry_after)},
            )
        self.held += 1
        self._metrics.waiting.set(self.held)

    def release(self) -> None:
        self.held -= 1
        self._metrics.waiting.set(self.held)
