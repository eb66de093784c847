"""TLS for real: a private `redis-server` that speaks only TLS (`--port 0 --tls-port`) and a
private RabbitMQ node whose only listener is TLS, with a CA and certificates made for the
test. With the CA configured, genq's Redis clients, the Python client (pika publisher with
confirms), the gateway and the worker's Celery app talk to them; without it, connecting
fails saying why. (The shared broker and Redis are never touched.)"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from genq.errors import PublishError
from genq.local import free_port, wait_for
from genq.settings import ClientSettings, FleetSettings, GatewaySettings
from genq.tls import celery_ssl, redis_from_url
from producers import Client
from producers.queues import queue_depths
from tests.integration.gateway_kit import GatewayServer, drop_queues
from tests.integration.private_rabbit import PrivateRabbit
from tests.unit.certs import Certs, make_certs


class TlsRedis:
    def __init__(self, directory: Path, certs: Certs, *, client_certs: bool) -> None:
        self.port = free_port()
        self.url = f"rediss://127.0.0.1:{self.port}/0"
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed (genq services start installs it)"
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                str(certs.server),
                "--tls-key-file",
                str(certs.server_key),
                "--tls-ca-cert-file",
                str(certs.ca),
                "--tls-auth-clients",
                "yes" if client_certs else "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--logfile",
                str(directory / "redis.log"),
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        trusted = FleetSettings(
            tls_ca_file=str(certs.ca),
            tls_cert_file=str(certs.client),
            tls_key_file=str(certs.client_key),
        )
        wait_for(
            lambda: self._answers(trusted), timeout=30, what="the TLS Redis to answer", interval=0.1
        )

    def _answers(self, settings: FleetSettings) -> bool:
        assert self.proc.poll() is None, "redis-server exited: is it built with TLS?"
        client = redis_from_url(self.url, settings, socket_timeout=2)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path_factory.mktemp("tls-redis"), certs, client_certs=False)
    yield server
    server.stop()


def test_a_client_with_the_ca_round_trips_and_one_without_is_refused(
    tls_redis: TlsRedis, certs: Certs
) -> None:
    with redis_from_url(
        tls_redis.url, FleetSettings(tls_ca_file=str(certs.ca)), decode_responses=True
    ) as client:
        client.set("genq-tls", "round trip")
        assert client.get("genq-tls") == "round trip"
    # The system's CAs don't know the test CA: the handshake fails and says why.
    with (
        redis_from_url(tls_redis.url, FleetSettings()) as untrusted,
        pytest.raises(redis.ConnectionError, match="certificate verify failed"),
    ):
        untrusted.ping()


def test_mutual_tls_needs_the_client_certificate(tmp_path: Path, certs: Certs) -> None:
    server = TlsRedis(tmp_path, certs, client_certs=True)
    try:
        with redis_from_url(
            server.url,
            FleetSettings(
                tls_ca_file=str(certs.ca),
                tls_cert_file=str(certs.client),
                tls_key_file=str(certs.client_key),
            ),
        ) as client:
            assert client.ping()
        with (
            redis_from_url(
                server.url, FleetSettings(tls_ca_file=str(certs.ca)), socket_timeout=5
            ) as anonymous,
            pytest.raises(redis.ConnectionError),
        ):
            anonymous.ping()
    finally:
        server.stop()


def test_the_python_client_and_the_gateway_use_a_tls_redis(
    services_up: None, tls_redis: TlsRedis, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job records in the TLS Redis (GENQ_TLS_CA_FILE from the environment, as a deployment
    sets it), the broker as usual; the gateway's health check reaches both."""
    model = f"tls-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("GENQ_TLS_CA_FILE", str(certs.ca))
    monkeypatch.setenv("GENQ_REDIS_URL", tls_redis.url)
    monkeypatch.setenv("GENQ_MODELS", model)
    try:
        with Client() as client:
            job_id = client.submit("over TLS", model=model, max_tokens=4)
            assert client.status(job_id).state.value == "queued"
            assert client.cancel(job_id) == "cancelled"
        gateway = GatewayServer(GatewaySettings(audit_log="off")).start()
        try:
            with gateway.http() as http:
                health = http.get("/healthz").json()
                assert (health["status"], health["redis"], health["rabbitmq"]) == (
                    "ok",
                    "ok",
                    "ok",
                ), health
        finally:
            gateway.stop()
        monkeypatch.delenv("GENQ_TLS_CA_FILE")
        blind = GatewayServer(GatewaySettings(audit_log="off")).start()
        try:
            with blind.http() as http:
                response = http.get("/healthz")
                assert response.status_code == 503
                assert "certificate verify failed" in response.json()["redis"]
        finally:
            blind.stop()
    finally:
        drop_queues(model)


# -- RabbitMQ over TLS -------------------------------------------------------------------------


def tls_rabbit(base: Path, certs: Certs) -> PrivateRabbit:
    """A private RabbitMQ node whose only listener is TLS, with the test's certificates."""
    rabbit = PrivateRabbit(base)
    for name in ("ca", "server", "server_key"):
        shutil.copy(getattr(certs, name), base / f"{name}.pem")
    (base / "rabbitmq.conf").write_text(
        "listeners.tcp = none\n"
        f"listeners.ssl.default = 127.0.0.1:{rabbit.port}\n"
        f"ssl_options.cacertfile = {base / 'ca.pem'}\n"
        f"ssl_options.certfile = {base / 'server.pem'}\n"
        f"ssl_options.keyfile = {base / 'server_key.pem'}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
        "loopback_users.guest = true\n"
    )
    if os.geteuid() == 0:  # the node runs as `rabbitmq` (see PrivateRabbit): it reads these
        entry = pwd.getpwnam("rabbitmq")
        for path in base.iterdir():
            os.chown(path, entry.pw_uid, entry.pw_gid)
    rabbit.url = f"amqps://guest:guest@127.0.0.1:{rabbit.port}/%2F"
    return rabbit.start()


@pytest.fixture(scope="module")
def amqps(certs: Certs) -> Iterator[PrivateRabbit]:
    base = Path(tempfile.mkdtemp(prefix="genq-rabbit-tls-"))
    os.chmod(base, 0o755)
    rabbit = tls_rabbit(base, certs)
    try:
        yield rabbit
    finally:
        rabbit.stop()
        rabbit.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_jobs_go_through_a_tls_broker_and_a_tls_redis(
    amqps: PrivateRabbit, tls_redis: TlsRedis, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python client publishes over amqps:// with confirms and records over rediss://;
    the worker's Celery app reaches both with the same CA; without the CA, the publish
    fails and says why."""
    model = f"tls-{uuid.uuid4().hex[:8]}"
    shared_redis = ClientSettings().redis_url
    for name, value in {
        "GENQ_TLS_CA_FILE": str(certs.ca),
        "GENQ_BROKER_URL": amqps.url,
        "GENQ_REDIS_URL": tls_redis.url,
        "GENQ_MODELS": model,
    }.items():
        monkeypatch.setenv(name, value)
    with Client() as client:
        ids = client.submit_many([{"model": model, "prompt": f"p{i}"} for i in range(3)])
        assert {client.status(i).state.value for i in ids} == {"queued"}
    assert (
        sum(
            queue_depths(
                ClientSettings(broker_url=amqps.url, tls_ca_file=str(certs.ca)), model
            ).values()
        )
        == 3
    )

    celery = Celery(broker=amqps.url, backend=tls_redis.url)
    celery.conf.update(celery_ssl(amqps.url, tls_redis.url, FleetSettings()))
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
    assert celery.backend.client.ping()

    # Without the CA (records in the plain shared Redis, so the broker is what refuses):
    # the job is not accepted, and the error says why.
    monkeypatch.delenv("GENQ_TLS_CA_FILE")
    monkeypatch.setenv("GENQ_REDIS_URL", shared_redis)
    with (
        Client() as blind,
        pytest.raises(PublishError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"),
    ):
        blind.submit("no CA", model=model)
