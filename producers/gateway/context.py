"""Everything one gateway holds, built once by the app factory and reached by the routes
through `gateway_of(request)`."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from fastapi import Request

from genq.settings import GatewaySettings
from genq.tls import redis_from_url
from producers import Client
from producers.gateway.audit import AuditLog
from producers.gateway.broker import BrokerProbe
from producers.gateway.limits import Backpressure
from producers.gateway.metrics import Metrics
from producers.gateway.tokens import PromptTokens
from producers.gateway.waiter import Waiter

__all__ = ["Gateway", "gateway_of"]


@dataclass
class Gateway:
    settings: GatewaySettings
    client: Client
    """Submits and cancels (synchronous: called from worker threads)."""
    redis: aioredis.Redis
    """Reads records, keys, files and batches from the event loop."""
    broker: BrokerProbe
    waiter: Waiter
    audit: AuditLog
    metrics: Metrics = field(default_factory=Metrics)
    limits: Backpressure = field(init=False)
    tokens: PromptTokens = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Backpressure(self.settings, self.redis, self.broker, self.metrics)
        self.tokens = PromptTokens(self.settings, self.redis)

    @classmethod
    def build(cls, settings: GatewaySettings, *, client: Client | None = None) -> Gateway:
        redis = redis_from_url(settings.redis_url, settings, client=aioredis.Redis,
                               decode_responses=True)
        return cls(
            settings=settings,
            client=client or Client(settings=settings),
            redis=redis,
            broker=BrokerProbe(settings.broker_url, levels=settings.levels,
                               ttl=settings.queue_depth_ttl, tls=settings),
            waiter=Waiter(redis),
            audit=AuditLog(settings.audit_log),
        )

    @property
    def keys_required(self) -> bool:
        return self.settings.keys_required

    async def close(self) -> None:
        await self.waiter.stop()
        self.client.close()
        self.broker.close()
        self.audit.close()
        await self.redis.aclose()


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw
