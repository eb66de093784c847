"""genq/tls.py: real ssl contexts built from a CA and a client certificate made here."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from genq.errors import ValidationError
from genq.settings import FleetSettings
from genq.tls import celery_ssl, pika_parameters, redis_from_url, ssl_context
from tests.unit.certs import Certs, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls(certs: Certs, **overrides: object) -> FleetSettings:
    fields: dict[str, object] = {
        "tls_ca_file": str(certs.ca),
        "tls_cert_file": str(certs.client),
        "tls_key_file": str(certs.client_key),
        **overrides,
    }
    return FleetSettings(**fields)  # type: ignore[arg-type]


def test_the_context_trusts_the_ca_verifies_and_carries_the_client_certificate(
    certs: Certs,
) -> None:
    context = ssl_context(tls(certs))
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "genq test CA"),),)]
    off = ssl_context(tls(certs, tls_verify=False))
    assert off.verify_mode is ssl.CERT_NONE and not off.check_hostname


def test_files_that_do_not_load_name_the_setting(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="GENQ_TLS_CA_FILE: cannot load"):
        ssl_context(tls(certs, tls_ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(ValidationError, match="GENQ_TLS_CERT_FILE / GENQ_TLS_KEY_FILE"):
        ssl_context(tls(certs, tls_key_file=str(certs.ca)))  # not the certificate's key


def test_pika_gets_tls_for_amqps_only(certs: Certs) -> None:
    params = pika_parameters("amqps://u:p@rabbit.example:5671/%2F", tls(certs))
    assert params.ssl_options is not None
    assert params.ssl_options.server_hostname == "rabbit.example"
    assert params.ssl_options.context.verify_mode is ssl.CERT_REQUIRED
    assert pika_parameters("amqp://u:p@rabbit.example/%2F", tls(certs)).ssl_options is None


def test_redis_gets_tls_for_rediss_only(certs: Certs) -> None:
    client = redis_from_url("rediss://redis.example:6380/0", tls(certs), client=aioredis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == str(certs.ca) and kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_certfile"] == str(certs.client)
    plain = redis_from_url("redis://redis.example:6379/0", tls(certs), decode_responses=True)
    assert isinstance(plain, redis.Redis)
    assert "ssl_ca_certs" not in plain.connection_pool.connection_kwargs


def test_celery_gets_tls_for_its_broker_and_result_backend(certs: Certs) -> None:
    conf = celery_ssl("amqps://h.example:5671//", "rediss://r.example:6380/0", tls(certs))
    assert conf["broker_use_ssl"] == {
        "ca_certs": str(certs.ca),
        "certfile": str(certs.client),
        "keyfile": str(certs.client_key),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "h.example",
    }
    assert conf["redis_backend_use_ssl"]["ssl_cert_reqs"] is ssl.CERT_REQUIRED
    assert celery_ssl("amqp://h//", "redis://r/0", tls(certs)) == {}


def test_a_clients_own_tls_settings_reach_its_store_and_publisher(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from producers.client import Client

    monkeypatch.delenv("GENQ_TLS_CA_FILE", raising=False)  # from the arguments only
    client = Client(
        redis_url="rediss://redis.example:6380/0",
        broker_url="amqps://u:p@rabbit.example:5671/%2F",
        tls_ca_file=str(certs.ca),
    )
    try:
        kwargs = client.store.redis.connection_pool.connection_kwargs
        assert kwargs["ssl_ca_certs"] == str(certs.ca)
        assert client.publisher._params.ssl_options is not None  # connects lazily
    finally:
        client.close()
