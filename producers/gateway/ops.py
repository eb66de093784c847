"""Operations: /healthz for load balancers and Kubernetes, /metrics for Prometheus.

Neither needs an API key: they say nothing about any tenant's work."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from genq.errors import BrokerError
from producers.gateway.context import gateway_of

__all__ = ["router"]

router = APIRouter(tags=["operations"])

# A health check that hangs is worse than one that fails: a probe gives up after a few seconds.
_CHECK_TIMEOUT = 3.0


@router.get("/healthz", responses={503: {"description": "The broker or Redis is down"}})
async def healthz(request: Request) -> JSONResponse:
    """200 when both RabbitMQ and Redis answer now, else 503 naming what is down; `gateway`
    is this process's name, which its Redis connections carry (CLIENT LIST)."""
    gw = gateway_of(request)
    checks: dict[str, Any] = {}
    try:
        await asyncio.wait_for(gw.redis.ping(), _CHECK_TIMEOUT)
        checks["redis"] = "ok"
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        # str, not repr: redis-py's repr drops the reason (a refused TLS handshake, ...).
        checks["redis"] = f"down: {type(exc).__name__}: {exc}"
    try:
        await asyncio.wait_for(run_in_threadpool(gw.broker.ping), _CHECK_TIMEOUT * 2)
        checks["rabbitmq"] = "ok"
    except (BrokerError, asyncio.TimeoutError) as exc:
        checks["rabbitmq"] = f"down: {exc!r}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", **checks, "gateway": gw.name},
        status_code=200 if ok else 503,
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text: requests by route and status, latency, jobs submitted, 429s."""
    body, content_type = gateway_of(request).metrics.render()
    return Response(body, media_type=content_type)
