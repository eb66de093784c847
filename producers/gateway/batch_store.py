"""Where a batch lives: one Redis hash per batch, a sorted set of each tenant's batches,
and the OpenAI batch object built from the hash."""

from __future__ import annotations

import json
from typing import Any, cast

import redis.asyncio as aioredis

from genq import names
from producers.gateway.auth import Caller
from producers.gateway.decoded import text_hash, texts
from producers.gateway.errors import ApiError

__all__ = ["CHUNK", "BatchStore", "as_object"]

# Records read per pipeline while counting or finishing a batch.
CHUNK = 1000

_TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


class BatchStore:
    def __init__(self, redis: aioredis.Redis, *, ttl: int) -> None:
        self.redis = redis
        self._ttl = ttl

    async def create(self, fields: dict[str, str], requests: list[tuple[str, str]]) -> None:
        batch_id, tenant = fields["id"], fields["tenant"]
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(names.batch_key(batch_id), mapping=cast("dict[Any, Any]", fields))
        pipe.expire(names.batch_key(batch_id), self._ttl)
        key = names.batch_requests_key(batch_id)
        for start in range(0, len(requests), CHUNK):
            pipe.rpush(key, *[json.dumps(r) for r in requests[start : start + CHUNK]])
        pipe.expire(key, self._ttl)
        pipe.zadd(names.tenant_batches_key(tenant), {batch_id: float(fields["created_at"])})
        pipe.expire(names.tenant_batches_key(tenant), self._ttl)
        await pipe.execute()

    async def get(self, batch_id: str, who: Caller) -> dict[str, str]:
        raw = text_hash(await self.redis.hgetall(names.batch_key(batch_id)))
        if not raw or not who.sees(raw.get("tenant", "")):
            raise ApiError(404, f"batch {batch_id}: not found", param="batch_id", code="not_found")
        return dict(raw)

    async def update(self, batch_id: str, **fields: Any) -> None:
        await self.redis.hset(
            names.batch_key(batch_id), mapping={k: str(v) for k, v in fields.items()}
        )

    async def requests(self, batch_id: str) -> list[tuple[str, str]]:
        key = names.batch_requests_key(batch_id)
        raw = texts(await self.redis.lrange(key, 0, -1))
        return [(str(c), str(j)) for c, j in map(json.loads, raw)]

    async def ids(self, tenant: str) -> list[str]:
        return texts(await self.redis.zrevrange(names.tenant_batches_key(tenant), 0, -1))


def as_object(raw: dict[str, str]) -> dict[str, Any]:
    """A batch as OpenAI shows it."""

    def opt_int(name: str) -> int | None:
        value = raw.get(name)
        return int(float(value)) if value else None

    return {
        "id": raw["id"],
        "object": "batch",
        "endpoint": raw["endpoint"],
        "errors": json.loads(raw["errors"]) if raw.get("errors") else None,
        "input_file_id": raw["input_file_id"],
        "completion_window": raw["completion_window"],
        "status": raw["status"],
        "output_file_id": raw.get("output_file_id") or None,
        "error_file_id": raw.get("error_file_id") or None,
        **{name: opt_int(name) for name in _TIMES},
        "request_counts": {
            "total": int(raw.get("total", 0)),
            "completed": int(raw.get("completed", 0)),
            "failed": int(raw.get("failed", 0)),
        },
        "metadata": json.loads(raw["metadata"]) if raw.get("metadata") else None,
    }
