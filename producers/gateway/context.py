"""Everything one gateway holds, built once by the app factory and reached by the routes
through `gateway_of(request)`.

Redis connections are bounded, whatever the number of requests open: the shared pool holds
at most `GENQ_GATEWAY_REDIS_CONNECTIONS` (N; requests wait for a free one, up to
`_POOL_WAIT` seconds, then get 503), one of them the result subscription (waiter.py); the
stream reader has one of its own (streams.py); and the synchronous client, used only from
the two client threads (submission and control), holds at most one each. So a gateway
process holds at most N + 3 connections, all named `genq-gateway-<id>` in CLIENT LIST."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from fastapi import Request

from genq.settings import GatewaySettings
from genq.tls import redis_from_url, redis_pool_from_url
from producers import Client
from producers.gateway.audit import AuditLog
from producers.gateway.batcher import Batcher
from producers.gateway.broker import BrokerProbe
from producers.gateway.capacity import Capacity
from producers.gateway.limits import Backpressure
from producers.gateway.metrics import Metrics
from producers.gateway.streams import StreamHub
from producers.gateway.tokens import PromptTokens
from producers.gateway.waiter import Waiter

T = TypeVar("T")

# Seconds a request waits for a free connection of the pool before it is answered 503.
_POOL_WAIT = 10.0

__all__ = ["Gateway", "gateway_of"]


@dataclass
class Gateway:
    settings: GatewaySettings
    name: str
    """`genq-gateway-<id>`: every Redis connection of this gateway carries it."""
    client: Client
    """Submits and cancels: synchronous, so only ever called on the two client threads."""
    redis: aioredis.Redis
    """Reads records, keys, files and batches from the event loop (the bounded pool)."""
    broker: BrokerProbe
    waiter: Waiter
    streams: StreamHub
    audit: AuditLog
    metrics: Metrics = field(default_factory=Metrics)
    limits: Backpressure = field(init=False)
    tokens: PromptTokens = field(init=False)
    capacity: Capacity = field(init=False)
    batcher: Batcher = field(init=False)
    _submitting: ThreadPoolExecutor = field(init=False)
    _control: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.limits = Backpressure(self.settings, self.redis, self.broker, self.metrics)
        self.tokens = PromptTokens(self.settings, self.redis)
        self.capacity = Capacity(self.settings, self.metrics)
        # Submissions have a thread of their own, so a cancel never waits behind a batch.
        self._submitting = ThreadPoolExecutor(1, thread_name_prefix="genq-gw-submit")
        self._control = ThreadPoolExecutor(1, thread_name_prefix="genq-gw-control")
        self.batcher = Batcher(self.client.submit_many, self._submitting)

    @classmethod
    def build(cls, settings: GatewaySettings, *, client: Client | None = None) -> Gateway:
        name = f"genq-gateway-{uuid.uuid4().hex[:12]}"
        pool = redis_pool_from_url(
            settings.redis_url,
            settings,
            pool=aioredis.BlockingConnectionPool,
            max_connections=settings.gateway_redis_connections,
            timeout=_POOL_WAIT,
            decode_responses=True,
            client_name=name,
        )
        redis = aioredis.Redis(connection_pool=pool)
        reader = redis_from_url(
            settings.redis_url,
            settings,
            client=aioredis.Redis,
            decode_responses=True,
            single_connection_client=True,
            client_name=name,
        )
        return cls(
            settings=settings,
            name=name,
            client=client or Client(settings=settings, connection_name=name),
            redis=redis,
            broker=BrokerProbe(
                settings.broker_url,
                levels=settings.levels,
                ttl=settings.queue_depth_ttl,
                tls=settings,
            ),
            waiter=Waiter(redis),
            streams=StreamHub(reader, redis),
            audit=AuditLog(settings.audit_log),
        )

    @property
    def keys_required(self) -> bool:
        return self.settings.keys_required

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the control thread: the synchronous client's calls other than
        submission (cancels), one at a time, on one connection."""
        return await asyncio.get_running_loop().run_in_executor(self._control, fn, *args)

    def start(self) -> None:
        self.tokens.preload()
        self.waiter.start()
        self.streams.start()
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.stop()
        await self.streams.stop()
        await self.waiter.stop()
        self._submitting.shutdown(wait=True)
        self._control.shutdown(wait=True)
        self.client.close()
        self.broker.close()
        self.audit.close()
        await self.redis.aclose()


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw
