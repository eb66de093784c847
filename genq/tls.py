"""TLS to RabbitMQ and Redis: `amqps://` and `rediss://` URLs, verified against the CA the
settings name, applied the same way wherever genq connects.

    GENQ_TLS_CA_FILE     PEM file of the CA(s) that signed the servers' certificates
                         (unset: the system's trusted CAs)
    GENQ_TLS_CERT_FILE   client certificate (PEM) for servers that require one (mutual TLS)
    GENQ_TLS_KEY_FILE    its private key (unset: the key is in the certificate file)
    GENQ_TLS_VERIFY      verify the server's certificate and host name (default true);
                         false is for a test bench only: it lets anyone in the middle read
                         the traffic

Plain `amqp://` and `redis://` URLs are untouched by every helper here: TLS is chosen by
the URL's scheme alone, so a deployment turns it on by changing its URLs.

Every connection goes through one of: `pika_parameters` (pika: producers, the gateway, the
worker's broker link), `redis_from_url` (redis-py, sync or asyncio), `celery_ssl` (the
Celery app's own broker and result-backend connections)."""

from __future__ import annotations

import ssl
from typing import Any, Protocol, TypeVar, overload
from urllib.parse import urlsplit

import pika
import redis

from genq.errors import ValidationError

__all__ = [
    "TlsSettings",
    "celery_ssl",
    "pika_parameters",
    "redis_from_url",
    "redis_pool_from_url",
    "redis_ssl_kwargs",
    "ssl_context",
]


class TlsSettings(Protocol):
    """The TLS fields every settings class has (from `FleetSettings`)."""

    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_verify: bool


R = TypeVar("R")
P = TypeVar("P")


def ssl_context(settings: TlsSettings) -> ssl.SSLContext:
    """A client context: the configured CA (else the system's), the client certificate if
    any, and verification of the server's certificate and host name unless turned off."""
    s = settings
    # A wrong path is a configuration error: name the setting, rather than fail deep inside
    # a connect.
    try:
        context = ssl.create_default_context(cafile=s.tls_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(
            f"GENQ_TLS_CA_FILE: cannot load {s.tls_ca_file!r}: {exc}", field="tls_ca_file"
        ) from exc
    if s.tls_cert_file:
        try:
            context.load_cert_chain(s.tls_cert_file, s.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValidationError(
                f"GENQ_TLS_CERT_FILE / GENQ_TLS_KEY_FILE: cannot load {s.tls_cert_file!r}: {exc}",
                field="tls_cert_file",
            ) from exc
    if not s.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def pika_parameters(url: str, settings: TlsSettings) -> pika.URLParameters:
    """`pika.URLParameters(url)`, with the settings' TLS for an `amqps://` URL."""
    params = pika.URLParameters(url)
    if urlsplit(url).scheme == "amqps":
        params.ssl_options = pika.SSLOptions(ssl_context(settings), server_hostname=params.host)
    return params


def redis_ssl_kwargs(settings: TlsSettings) -> dict[str, Any]:
    """redis-py's TLS arguments (for a `rediss://` URL)."""
    s = settings
    return {
        "ssl_ca_certs": s.tls_ca_file,
        "ssl_certfile": s.tls_cert_file,
        "ssl_keyfile": s.tls_key_file,
        "ssl_cert_reqs": "required" if s.tls_verify else "none",
        "ssl_check_hostname": s.tls_verify,
    }


@overload
def redis_from_url(
    url: str, settings: TlsSettings, *, client: None = None, **kwargs: Any
) -> redis.Redis: ...
@overload
def redis_from_url(url: str, settings: TlsSettings, *, client: type[R], **kwargs: Any) -> R: ...
def redis_from_url(
    url: str, settings: TlsSettings, *, client: type[R] | None = None, **kwargs: Any
) -> R | redis.Redis:
    """`client.from_url(url, **kwargs)` (`redis.Redis` unless given, e.g.
    `redis.asyncio.Redis`), with the settings' TLS for a `rediss://` URL."""
    cls: Any = client if client is not None else redis.Redis
    if urlsplit(url).scheme == "rediss":
        kwargs = {**redis_ssl_kwargs(settings), **kwargs}
    return cls.from_url(url, **kwargs)  # type: ignore[no-any-return]


def redis_pool_from_url(url: str, settings: TlsSettings, *, pool: type[P], **kwargs: Any) -> P:
    """`pool.from_url(url, **kwargs)` (a redis-py connection pool class), with the
    settings' TLS for a `rediss://` URL."""
    if urlsplit(url).scheme == "rediss":
        kwargs = {**redis_ssl_kwargs(settings), **kwargs}
    return pool.from_url(url, **kwargs)  # type: ignore[attr-defined,no-any-return]


def celery_ssl(broker_url: str, redis_url: str, settings: TlsSettings) -> dict[str, Any]:
    """Celery settings for its own connections: `broker_use_ssl` for an `amqps://` broker,
    `redis_backend_use_ssl` for a `rediss://` result backend; empty for plain URLs."""
    s = settings
    reqs = ssl.CERT_REQUIRED if s.tls_verify else ssl.CERT_NONE
    conf: dict[str, Any] = {}
    if urlsplit(broker_url).scheme == "amqps":
        options = {
            "ca_certs": s.tls_ca_file,
            "certfile": s.tls_cert_file,
            "keyfile": s.tls_key_file,
            "cert_reqs": reqs,
        }
        if s.tls_verify:
            options["server_hostname"] = urlsplit(broker_url).hostname
        conf["broker_use_ssl"] = {k: v for k, v in options.items() if v is not None}
    if urlsplit(redis_url).scheme == "rediss":
        options = {
            "ssl_ca_certs": s.tls_ca_file,
            "ssl_certfile": s.tls_cert_file,
            "ssl_keyfile": s.tls_key_file,
            "ssl_cert_reqs": reqs,
        }
        conf["redis_backend_use_ssl"] = {k: v for k, v in options.items() if v is not None}
    return conf
