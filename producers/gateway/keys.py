"""API keys: created by `genq keys create --tenant T`, stored hashed in Redis.

A key is 32 random bytes (URL-safe text with a `genq-` prefix), shown once at creation.
Redis holds only its SHA-256, under which the key's tenant and name are kept. A slow
password hash (bcrypt, argon2) protects guessable passwords; a 256-bit random key can't
be guessed, so one SHA-256 is as safe and lets a request be authenticated with one Redis
read. A key's public ID is the start of its hash: safe to log and to revoke by."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from genq import names
from genq.errors import NotFoundError, StoreError, ValidationError
from genq.tls import TlsSettings, redis_from_url

__all__ = ["KEY_PREFIX", "KeyInfo", "KeyStore", "check_tenant", "hash_key", "key_id"]

KEY_PREFIX = "genq-"
_ID_CHARS = 12  # 48 bits of the hash: unique among any realistic number of keys
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    tenant: str
    name: str
    created_at: float

    @classmethod
    def from_hash(cls, raw: dict[str, Any]) -> KeyInfo:
        return cls(
            id=raw["id"],
            tenant=raw["tenant"],
            name=raw.get("name", ""),
            created_at=float(raw.get("created_at", 0)),
        )


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id(secret: str) -> str:
    return hash_key(secret)[:_ID_CHARS]


def check_tenant(tenant: str) -> str:
    """Tenants name Redis keys and metrics: letters, digits, `.`, `_`, `-`, up to 100."""
    if not _TENANT.match(tenant):
        raise ValidationError(
            f"tenant: {tenant!r} must be 1-100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
            field="tenant",
        )
    return tenant


class KeyStore:
    """Create, list and revoke keys (synchronous: the CLI). The gateway authenticates with
    `producers.gateway.auth`, reading the same keys."""

    def __init__(self, url: str, tls: TlsSettings) -> None:
        self._redis: redis.Redis = redis_from_url(url, tls, decode_responses=True)

    def close(self) -> None:
        self._redis.close()

    def create(self, tenant: str, *, name: str = "") -> tuple[str, KeyInfo]:
        """A new key for `tenant`: (the key itself, shown only now; its info)."""
        check_tenant(tenant)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(secret)
        info = KeyInfo(id=digest[:_ID_CHARS], tenant=tenant, name=name, created_at=time.time())
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            names.api_key_key(digest),
            mapping={
                "id": info.id,
                "tenant": tenant,
                "name": name,
                "created_at": repr(info.created_at),
            },
        )
        pipe.hset(names.API_KEYS, info.id, digest)
        self._run(pipe)
        return secret, info

    def all(self, *, tenant: str | None = None) -> list[KeyInfo]:
        """Every key's info (of one tenant, if given), oldest first."""
        try:
            digests = cast(dict[str, str], self._redis.hgetall(names.API_KEYS)).values()
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        pipe = self._redis.pipeline(transaction=False)
        for digest in digests:
            pipe.hgetall(names.api_key_key(digest))
        infos = [KeyInfo.from_hash(raw) for raw in self._run(pipe) if raw]
        return sorted(
            (i for i in infos if tenant is None or i.tenant == tenant), key=lambda i: i.created_at
        )

    def revoke(self, key_id: str) -> KeyInfo:
        """Delete a key by its ID; requests with it get 401 from then on."""
        try:
            digest = cast("str | None", self._redis.hget(names.API_KEYS, key_id))
            raw = cast(
                dict[str, str], self._redis.hgetall(names.api_key_key(digest)) if digest else {}
            )
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
        if not digest:
            raise NotFoundError(f"key {key_id}: not found")
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(names.api_key_key(digest))
        pipe.hdel(names.API_KEYS, key_id)
        self._run(pipe)
        return KeyInfo.from_hash({"id": key_id, "tenant": "", **raw})

    def _run(self, pipe: Any) -> list[Any]:
        try:
            return cast(list[Any], pipe.execute())
        except redis.RedisError as exc:
            raise StoreError(f"redis: {exc}") from exc
