"""Who is calling: the tenant every job of a request belongs to.

With API keys on, the tenant is the key's (`Authorization: Bearer <key>`); no key or an
unknown one is 401, and another tenant's jobs, files and batches read as 404. With keys off
(local use) the tenant is the one a request names (`X-Genq-Tenant`, or a job's `tenant`
field), else the default tenant, and every job is readable."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request
from redis.exceptions import RedisError

from genq import names
from genq.errors import ValidationError
from producers.gateway.context import Gateway, gateway_of
from producers.gateway.decoded import text_hash
from producers.gateway.errors import ApiError, unavailable
from producers.gateway.keys import KeyInfo, check_tenant, hash_key

__all__ = ["TENANT_HEADER", "Caller", "caller"]

TENANT_HEADER = "X-Genq-Tenant"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    key_id: str | None
    """The API key's public ID, for the audit log; None with keys off."""
    keyed: bool
    """Keys are on: the tenant is fixed by the key and tenants are isolated."""
    address: str | None = None

    def sees(self, tenant: str) -> bool:
        return not self.keyed or tenant == self.tenant

    def tenant_for(self, named: str | None) -> str:
        """The tenant of a job that names `named` (or none)."""
        if named is None or named == self.tenant:
            return self.tenant
        if self.keyed:
            raise ApiError(
                403,
                f"tenant: {named!r} is not yours; your API key belongs to "
                f"tenant {self.tenant!r} (omit the field)",
                param="tenant",
            )
        return named


async def lookup_key(redis: aioredis.Redis, secret: str) -> KeyInfo | None:
    raw = text_hash(await redis.hgetall(names.api_key_key(hash_key(secret))))
    return KeyInfo.from_hash(raw) if raw else None


async def caller(request: Request) -> Caller:
    """FastAPI dependency: authenticate the request."""
    gw: Gateway = gateway_of(request)
    address = request.client.host if request.client else None
    secret = _bearer(request, strict=gw.keys_required)
    info = None
    if secret is not None and (gw.keys_required or secret.startswith("genq-")):
        try:
            info = await lookup_key(gw.redis, secret)
        except RedisError as exc:
            raise unavailable("redis", exc) from None
    if gw.keys_required:
        if secret is None:
            raise ApiError(
                401,
                "missing API key: send the header 'Authorization: Bearer "
                "<key>' (create one with `genq keys create --tenant T`)",
                code="missing_api_key",
            )
        if info is None:
            raise ApiError(401, "invalid API key (unknown or revoked)", code="invalid_api_key")
        return Caller(tenant=info.tenant, key_id=info.id, keyed=True, address=address)
    if info is not None:  # keys off, but a real key says who this is
        return Caller(tenant=info.tenant, key_id=info.id, keyed=False, address=address)
    named = request.headers.get(TENANT_HEADER)
    try:
        tenant = check_tenant(named) if named else gw.settings.default_tenant
    except ValidationError as exc:
        raise ApiError(422, f"{TENANT_HEADER} header: {exc}", param=TENANT_HEADER) from None
    return Caller(tenant=tenant, key_id=None, keyed=False, address=address)


def _bearer(request: Request, *, strict: bool) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        if not strict:
            return None
        raise ApiError(401, "Authorization: expected 'Bearer <key>'", code="invalid_api_key")
    return value.strip()
