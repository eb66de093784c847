"""Prometheus metrics: requests by route and status, latency, jobs submitted, 429s.

Each app gets its own registry, so two gateways in one process (tests) don't collide and
/metrics shows exactly this gateway's counters."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics", "MetricsMiddleware"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "genq_gateway_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "genq_gateway_request_seconds",
            "Time to answer a request",
            ["route"],
            registry=self.registry,
            buckets=(
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                120,
                300,
                600,
            ),
        )
        self.jobs = Counter(
            "genq_gateway_jobs_submitted", "Jobs accepted", ["model", "api"], registry=self.registry
        )
        self.rejected = Counter(
            "genq_gateway_backpressure_rejections",
            "Requests refused with 429 (a queue limit) or 503 (waiting)",
            ["limit"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "genq_gateway_waiting_requests",
            "Requests held open waiting on jobs (completions, streams, long polls)",
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every response by its route template (`/v1/jobs/{job_id}`, not the ID, so the
    label set stays small); requests that matched no route count as `unmatched`."""

    def __init__(self, app: Any, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, scope.get("method", ""), str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
