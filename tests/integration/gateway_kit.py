"""What the gateway's integration tests share: a gateway served by uvicorn in this process
(as `genq gateway` serves it), fixtures that start them, and small helpers.

conftest.py imports the fixtures for every test module; module-scoped ones give each module
its own gateways. Jobs that must stay queued go to a declared model no worker serves (workers may be
scaled to zero)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pika
import pytest
import uvicorn

from genq import names
from genq.local import WorkerProcess, free_port, wait_for
from genq.settings import ClientSettings, GatewaySettings
from producers.gateway.app import create_app
from producers.gateway.keys import KeyStore

__all__ = [
    "GatewayServer",
    "MakeGateway",
    "audit_path",
    "drop_queues",
    "error_of",
    "gateway",
    "http",
    "idle_model",
    "keyed",
    "keys",
    "make_gateway",
    "new_tenant",
    "queued_messages",
]

LEVELS = 10


class GatewayServer:
    """`create_app(settings)` served by uvicorn in a thread, as `genq gateway` serves it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)

    def start(self) -> GatewayServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=30, what="the gateway to start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def http(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def openai(self, key: str = "unused", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, timeout=120, **kwargs)


MakeGateway = Callable[..., GatewayServer]


@pytest.fixture(scope="module")
def idle_model(fleet_env: dict[str, str]) -> Iterator[str]:
    """A declared model no worker serves: its jobs stay queued."""
    model = f"idle-{uuid.uuid4().hex[:8]}"
    yield model
    drop_queues(model)


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def make_gateway(
    fleet_env: dict[str, str], model_name: str, idle_model: str, audit_path: Path
) -> Iterator[MakeGateway]:
    """Factory: `make_gateway(**settings)` starts a gateway; all stop at the module's end."""
    started: list[GatewayServer] = []

    def make(**overrides: Any) -> GatewayServer:
        fields: dict[str, Any] = {
            "models": [model_name, idle_model],
            "audit_log": str(audit_path),
            **overrides,
        }
        gateway = GatewayServer(GatewaySettings(**fields)).start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def gateway(make_gateway: MakeGateway, worker: WorkerProcess) -> GatewayServer:
    """Keys off (local use), default limits, the shared worker up."""
    return make_gateway()


@pytest.fixture
def http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with gateway.http() as client:
        yield client


def drop_queues(model: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(ClientSettings().broker_url))
    channel = conn.channel()
    for level in range(LEVELS):
        channel.queue_delete(names.level_queue(model, level))
    channel.queue_delete(names.dead_queue(model))
    conn.close()


def queued_messages(model: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(ClientSettings().broker_url))
    try:
        channel = conn.channel()
        total = 0
        for level in range(LEVELS):
            try:
                total += channel.queue_declare(
                    names.level_queue(model, level), passive=True
                ).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                channel = conn.channel()
        return total
    finally:
        conn.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


@pytest.fixture(scope="module")
def keyed(make_gateway: MakeGateway, worker: WorkerProcess) -> GatewayServer:
    return make_gateway(api_keys="on")


@pytest.fixture(scope="module")
def keys(fleet_env: dict[str, str]) -> Iterator[KeyStore]:
    store = KeyStore(ClientSettings().redis_url, ClientSettings())
    yield store
    store.close()


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"
