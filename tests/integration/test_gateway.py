"""The HTTP gateway against a real worker: the jobs API over plain HTTP, completions and chat
through the official `openai` package, API keys and tenant isolation, every limit and 429,
health, metrics, the audit log, the Batch API, and a schemathesis run finding no 5xx.

Each gateway runs in this process (uvicorn on a free port, in a thread). Jobs that must stay
queued go to a declared model no worker serves (workers may be scaled to zero)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import openai
import pika
import pytest
import schemathesis
import uvicorn
from schemathesis.checks import not_a_server_error

from genq import names
from genq.local import WorkerProcess, free_port, wait_for
from genq.settings import ClientSettings, GatewaySettings
from producers.gateway.app import create_app
from producers.gateway.keys import KeyStore

LEVELS = 10


class GatewayServer:
    """`create_app(settings)` served by uvicorn in a thread, as `genq gateway` serves it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
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
def make_gateway(fleet_env: dict[str, str], model_name: str, idle_model: str,
                 audit_path: Path) -> Iterator[MakeGateway]:
    """Factory: `make_gateway(**settings)` starts a gateway; all stop at the module's end."""
    started: list[GatewayServer] = []

    def make(**overrides: Any) -> GatewayServer:
        fields: dict[str, Any] = {"models": [model_name, idle_model],
                                  "audit_log": str(audit_path), **overrides}
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
                total += channel.queue_declare(names.level_queue(model, level),
                                               passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker:
                channel = conn.channel()
        return total
    finally:
        conn.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


# -- 1. the jobs API ----------------------------------------------------------------------


def test_submit_one_job_and_long_poll_its_result(http: httpx.Client, model_name: str) -> None:
    response = http.post("/v1/jobs", json={"model": model_name, "prompt": "Once upon a time",
                                           "max_tokens": 8, "ignore_eos": True})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    record = http.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
    assert record["state"] == "succeeded", record
    assert record["id"] == job_id and record["model"] == model_name
    assert record["usage"]["completion_tokens"] == 8
    assert isinstance(record["text"], str)
    assert record["tenant"] == "default"
    for field in ("enqueued_at", "started_at", "finished_at", "worker", "attempts", "priority",
                  "cached", "error"):
        assert field in record


def test_submit_a_list_of_jobs(http: httpx.Client, model_name: str) -> None:
    jobs = [{"model": model_name, "prompt": f"list {i}", "max_tokens": 4} for i in range(5)]
    response = http.post("/v1/jobs", json=jobs)
    assert response.status_code == 202, response.text
    ids = response.json()["ids"]
    assert len(set(ids)) == 5
    for job_id in ids:
        assert http.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()["state"] == "succeeded"


def test_priority_comes_from_the_body_or_the_header(http: httpx.Client, idle_model: str) -> None:
    def level(body: dict[str, Any], **headers: str) -> int:
        response = http.post("/v1/jobs", json={"model": idle_model, "prompt": "p", **body},
                             headers=headers)
        assert response.status_code == 202, response.text
        return int(http.get(f"/v1/jobs/{response.json()['id']}").json()["priority"])

    assert level({}) == 0
    assert level({}, **{"X-Genq-Priority": "7"}) == 7
    assert level({"priority": 3}, **{"X-Genq-Priority": "7"}) == 3  # the job's own wins
    assert level({"priority": 9}) == 9


def test_deadline_and_idempotency_key(http: httpx.Client, idle_model: str) -> None:
    key = uuid.uuid4().hex
    body = {"model": idle_model, "prompt": "once", "deadline": 300, "idempotency_key": key}
    first = http.post("/v1/jobs", json=body).json()["id"]
    again = http.post("/v1/jobs", json=body).json()["id"]
    assert first == again
    record = http.get(f"/v1/jobs/{first}").json()
    assert record["deadline_at"] == pytest.approx(time.time() + 300, abs=30)


def test_cancel_a_queued_job(http: httpx.Client, idle_model: str) -> None:
    job_id = http.post("/v1/jobs", json={"model": idle_model, "prompt": "never"}).json()["id"]
    response = http.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json() == {"id": job_id, "state": "cancelled"}
    assert http.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
    assert http.delete(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"  # already ended


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"priority": 10}, 422, "priority", "priority: 10 is outside the levels 0..9"),
        ({"priority": -1}, 422, "priority", "0..9"),
        ({"priority": 2.5}, 422, "priority", "must be an integer"),
        ({"max_tokens": 0}, 422, "max_tokens", "max_tokens: 0 is outside 1..4096"),
        ({"max_tokens": 99999}, 422, "max_tokens", "outside 1..4096"),
        ({"temperature": 3}, 422, "temperature", "less than or equal to 2"),
        ({"prompt": ""}, 422, None, "prompt: must not be empty"),
        ({"prompt": None}, 422, None, "give exactly one of prompt or messages"),
        ({"colour": "red"}, 422, "colour", "colour"),
        ({"model": "gpt-9"}, 404, "model", "'gpt-9' is not served by this fleet"),
        ({"deadline": -5}, 422, "deadline", "greater than 0"),
    ],
)
def test_bad_jobs_are_refused_naming_the_field_and_publish_nothing(
    http: httpx.Client, idle_model: str, body: dict[str, Any], status: int, param: str | None,
    words: str,
) -> None:
    before = queued_messages(idle_model)
    response = http.post("/v1/jobs", json={"model": idle_model, "prompt": "hi", **body})
    assert response.status_code == status, response.text
    error = error_of(response)
    assert words in error["message"]
    assert error["param"] == param
    # ... and in a list, the bad one is named by its index; the good one is not published.
    response = http.post("/v1/jobs", json=[{"model": idle_model, "prompt": "good"},
                                           {"model": idle_model, "prompt": "hi", **body}])
    assert response.status_code == status
    assert error_of(response)["message"].startswith("jobs[1].")
    assert queued_messages(idle_model) == before


def test_malformed_requests_are_4xx_never_5xx(http: httpx.Client, idle_model: str) -> None:
    cases = [
        http.post("/v1/jobs", content=b"{not json"),
        http.post("/v1/jobs", content=b"NaN"),
        http.post("/v1/jobs", json="a string"),
        http.post("/v1/jobs", json=[]),
        http.post("/v1/jobs", json=[1, 2]),
        http.post("/v1/jobs", json={"model": idle_model, "prompt": "hi"},
                  headers={"X-Genq-Priority": "urgent"}),
        http.get("/v1/jobs/no-such-job"),
        http.delete("/v1/jobs/no-such-job"),
        http.get("/v1/jobs/x", params={"wait": "soon"}),
        http.get("/v1/jobs/x", params={"wait": 10_000}),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, response.text
        assert error_of(response)["message"]
    assert [r.status_code for r in cases] == [422, 422, 422, 422, 422, 422, 404, 404, 422, 422]
    assert "X-Genq-Priority" in error_of(cases[5])["message"]
    assert "GENQ_MAX_WAIT" in error_of(cases[9])["message"]


def test_limits_on_body_size_and_jobs_per_request(make_gateway: MakeGateway,
                                                  idle_model: str) -> None:
    gateway = make_gateway(max_body_bytes=4096, max_jobs_per_request=3)
    with gateway.http() as http:
        response = http.post("/v1/jobs", json={"model": idle_model, "prompt": "x" * 5000})
        assert response.status_code == 413
        assert "over the limit of 4096 bytes (GENQ_MAX_BODY_BYTES)" in error_of(response)["message"]

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
            yield b'{"model": "x", "prompt": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'
        assert http.post("/v1/jobs", content=chunked()).status_code == 413
        response = http.post("/v1/jobs", json=[{"model": idle_model, "prompt": "a"}] * 4)
        assert response.status_code == 422
        assert "over the limit of 3 (GENQ_MAX_JOBS_PER_REQUEST)" in error_of(response)["message"]


# -- 2. OpenAI-compatible completions and chat -----------------------------------------------


def test_openai_completions(gateway: GatewayServer, model_name: str) -> None:
    client = gateway.openai()
    completion = client.completions.create(model=model_name, prompt="Once upon a time",
                                           max_tokens=6, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert completion.object == "text_completion"
    assert completion.model == model_name
    (choice,) = completion.choices
    assert isinstance(choice.text, str) and choice.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6

    # Several prompts, n choices each, indexed prompt by prompt; greedy, so choices agree.
    many = client.completions.create(model=model_name, prompt=["one", "two"], n=2,
                                     max_tokens=3, temperature=0, echo=True)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text.startswith("one") and many.choices[2].text.startswith("two")
    assert many.choices[0].text == many.choices[1].text


def test_openai_chat_completions(gateway: GatewayServer, model_name: str) -> None:
    client = gateway.openai()
    chat = client.chat.completions.create(
        model=model_name, max_tokens=5, temperature=0.7, seed=1,
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        extra_body={"ignore_eos": True, "priority": 5})
    assert chat.object == "chat.completion"
    (choice,) = chat.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert chat.usage is not None and chat.usage.completion_tokens == 5
    # The chat template wraps the messages: the model saw more than their bare words.
    assert chat.usage.prompt_tokens > 4


def test_openai_models(gateway: GatewayServer, model_name: str, idle_model: str) -> None:
    client = gateway.openai()
    assert {m.id for m in client.models.list()} == {model_name, idle_model}
    assert client.models.retrieve(model_name).id == model_name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_openai_errors_are_openai_errors(gateway: GatewayServer, model_name: str) -> None:
    client = gateway.openai(max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=4)
    with pytest.raises(openai.UnprocessableEntityError, match="max_tokens"):
        client.completions.create(model=model_name, prompt="hi", max_tokens=100_000)
    with pytest.raises(openai.BadRequestError, match="stream is not supported yet"):
        client.chat.completions.create(model=model_name, stream=True,
                                       messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError, match="logprobs"):
        client.completions.create(model=model_name, prompt="hi", max_tokens=4, logprobs=2)
    # The prompt is over the worker's context (512 tokens): the engine refuses the job.
    long_prompt = " ".join(f"word{i}" for i in range(2000))
    with pytest.raises(openai.UnprocessableEntityError, match="rejected by the engine"):
        client.completions.create(model=model_name, prompt=long_prompt, max_tokens=4)


def test_a_completion_that_takes_too_long_is_504_and_its_job_goes_on(
    make_gateway: MakeGateway, idle_model: str
) -> None:
    gateway = make_gateway(completion_timeout=1)
    with gateway.http() as http:
        response = http.post("/v1/completions", json={"model": idle_model, "prompt": "slow"})
        assert response.status_code == 504
        assert "GENQ_COMPLETION_TIMEOUT" in error_of(response)["message"]
        (job_id,) = response.headers["X-Genq-Job-Ids"].split(",")
        assert http.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
        http.delete(f"/v1/jobs/{job_id}")


def test_a_client_that_hangs_up_has_its_completion_cancelled(
    gateway: GatewayServer, idle_model: str, audit_path: Path
) -> None:
    tenant = new_tenant()
    with gateway.http(**{"X-Genq-Tenant": tenant}) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/chat/completions", timeout=1.5,
                      json={"model": idle_model, "messages": [{"role": "user", "content": "?"}]})

        def submitted() -> str | None:
            for event in map(json.loads, audit_path.read_text().splitlines()):
                if event["event"] == "job.submit" and event["tenant"] == tenant:
                    return str(event["jobs"][0])
            return None
        job_id = wait_for(submitted, timeout=10, what="the completion's job")
        wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled",
                 timeout=15, what="the abandoned job to be cancelled", interval=0.2)


# -- 3. API keys and tenants ------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(make_gateway: MakeGateway, worker: WorkerProcess) -> GatewayServer:
    return make_gateway(api_keys="on")


@pytest.fixture(scope="module")
def keys(fleet_env: dict[str, str]) -> Iterator[KeyStore]:
    store = KeyStore(ClientSettings().redis_url)
    yield store
    store.close()


def new_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def test_keys_are_required_when_on(keyed: GatewayServer, idle_model: str) -> None:
    job = {"model": idle_model, "prompt": "hi"}
    with keyed.http() as http:
        response = http.post("/v1/jobs", json=job)
        assert response.status_code == 401
        assert "missing API key" in error_of(response)["message"]
        response = http.post("/v1/jobs", json=job, headers={"Authorization": "Bearer genq-nope"})
        assert response.status_code == 401
        assert "invalid API key" in error_of(response)["message"]
        assert http.get("/v1/models").status_code == 401
        assert http.get("/healthz").status_code == 200  # no tenant's business
    with pytest.raises(openai.AuthenticationError):
        keyed.openai("genq-wrong", max_retries=0).models.list()


def test_tenants_see_only_their_own_jobs(keyed: GatewayServer, keys: KeyStore,
                                         idle_model: str, model_name: str) -> None:
    a_tenant, b_tenant = new_tenant(), new_tenant()
    a_key, _ = keys.create(a_tenant)
    b_key, _ = keys.create(b_tenant)
    with keyed.http(Authorization=f"Bearer {a_key}") as a, \
            keyed.http(Authorization=f"Bearer {b_key}") as b:
        job_id = a.post("/v1/jobs", json={"model": idle_model, "prompt": "mine"}).json()["id"]
        record = a.get(f"/v1/jobs/{job_id}").json()
        assert record["tenant"] == a_tenant
        # Another tenant's job reads exactly like a job that does not exist.
        assert b.get(f"/v1/jobs/{job_id}").status_code == 404
        theirs = error_of(b.get(f"/v1/jobs/{job_id}"))
        missing = error_of(b.get("/v1/jobs/nonexistent"))
        assert theirs["message"].replace(job_id, "nonexistent") == missing["message"]
        assert {**theirs, "message": ""} == {**missing, "message": ""}
        assert b.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert a.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
        # A key can't submit for another tenant.
        response = b.post("/v1/jobs", json={"model": idle_model, "prompt": "x",
                                            "tenant": a_tenant})
        assert response.status_code == 403 and error_of(response)["param"] == "tenant"
        assert a.delete(f"/v1/jobs/{job_id}").json()["state"] == "cancelled"
    # The OpenAI endpoints take the same keys.
    chat = keyed.openai(b_key).chat.completions.create(
        model=model_name, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    job_id = chat.id.removeprefix("chatcmpl-")
    with keyed.http(Authorization=f"Bearer {b_key}") as b:
        assert b.get(f"/v1/jobs/{job_id}").json()["tenant"] == b_tenant


def test_a_revoked_key_is_refused(keyed: GatewayServer, keys: KeyStore, idle_model: str) -> None:
    secret, info = keys.create(new_tenant(), name="short-lived")
    with keyed.http(Authorization=f"Bearer {secret}") as http:
        assert http.get("/v1/models").status_code == 200
        keys.revoke(info.id)
        assert http.get("/v1/models").status_code == 401


def test_genq_keys_cli_creates_a_working_key(keyed: GatewayServer, fleet_env: dict[str, str],
                                             audit_path: Path) -> None:
    from typer.testing import CliRunner

    from producers.gateway.cli import keys_app
    tenant = new_tenant()
    env = {"GENQ_AUDIT_LOG": str(audit_path)}
    done = CliRunner().invoke(keys_app, ["create", "--tenant", tenant, "--name", "ci"], env=env)
    assert done.exit_code == 0, done.output
    secret = done.stdout.strip().splitlines()[0]
    assert secret.startswith("genq-")
    with keyed.http(Authorization=f"Bearer {secret}") as http:
        assert http.get("/v1/models").status_code == 200
    listed = CliRunner().invoke(keys_app, ["list", "--tenant", tenant, "--json"], env=env)
    (line,) = listed.stdout.strip().splitlines()
    key_id = json.loads(line)["id"]
    assert secret not in listed.stdout
    assert CliRunner().invoke(keys_app, ["revoke", key_id], env=env).exit_code == 0
    assert CliRunner().invoke(keys_app, ["create", "--tenant", "bad tenant!"],
                              env=env).exit_code == 2
    events = [json.loads(x) for x in audit_path.read_text().splitlines()]
    assert {"key.create", "key.revoke"} <= {e["event"] for e in events if e.get("key") == key_id}


# -- 4. backpressure -------------------------------------------------------------------------


def test_a_tenant_over_its_queued_limit_gets_429(make_gateway: MakeGateway,
                                                 idle_model: str) -> None:
    gateway = make_gateway(tenant_queued_limit=3, model_queued_limit=0)
    tenant = new_tenant()
    with gateway.http(**{"X-Genq-Tenant": tenant}) as http:
        ids = [http.post("/v1/jobs", json={"model": idle_model, "prompt": f"q{i}"}).json()["id"]
               for i in range(3)]
        response = http.post("/v1/jobs", json={"model": idle_model, "prompt": "one too many"})
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "2"
        assert "limit of 3 (GENQ_TENANT_QUEUED_LIMIT)" in error_of(response)["message"]
        # A list that would cross the limit is refused whole.
        assert http.post("/v1/jobs", json=[{"model": idle_model, "prompt": "a"}]).status_code \
            == 429
        # Another tenant is not held back.
        other = http.post("/v1/jobs", json={"model": idle_model, "prompt": "x"},
                          headers={"X-Genq-Tenant": new_tenant()})
        assert other.status_code == 202
        # A job that ends makes room (once the counted queue is re-read, within ~1 s).
        http.delete(f"/v1/jobs/{ids[0]}")
        wait_for(lambda: http.post("/v1/jobs", json={"model": idle_model, "prompt": "room"}
                                   ).status_code == 202, timeout=10, what="room after a cancel",
                 interval=0.3)
    with pytest.raises(openai.RateLimitError):
        gateway.openai(max_retries=0, default_headers={"X-Genq-Tenant": tenant}
                       ).completions.create(model=idle_model, prompt="hi", max_tokens=2)


def test_a_model_over_its_queued_limit_gets_429(make_gateway: MakeGateway,
                                                fleet_env: dict[str, str]) -> None:
    model = f"idle-{uuid.uuid4().hex[:8]}"
    gateway = make_gateway(models=[model], model_queued_limit=2, tenant_queued_limit=0,
                           queue_depth_ttl=0)
    try:
        with gateway.http() as http:
            for _ in range(2):  # two tenants: the model's limit counts everyone's jobs
                response = http.post("/v1/jobs", json={"model": model, "prompt": "x"},
                                     headers={"X-Genq-Tenant": new_tenant()})
                assert response.status_code == 202
            response = http.post("/v1/jobs", json={"model": model, "prompt": "x"},
                                 headers={"X-Genq-Tenant": new_tenant()})
            assert response.status_code == 429
            assert "limit of 2 (GENQ_MODEL_QUEUED_LIMIT)" in error_of(response)["message"]
            assert int(response.headers["Retry-After"]) >= 1
            metrics = http.get("/metrics").text
            assert 'genq_gateway_backpressure_rejections_total{limit="model"} 1.0' in metrics
    finally:
        drop_queues(model)


# -- 5. health, metrics, OpenAPI, audit ------------------------------------------------------


def test_healthz(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok", "rabbitmq": "ok"}


def test_healthz_is_503_when_redis_or_the_broker_is_down(make_gateway: MakeGateway,
                                                         idle_model: str) -> None:
    dead = free_port()  # nothing listens there
    for broken, down in ((dict(redis_url=f"redis://127.0.0.1:{dead}/0"), "redis"),
                         (dict(broker_url=f"amqp://guest:guest@127.0.0.1:{dead}/%2F"),
                          "rabbitmq")):
        with make_gateway(**broken).http() as http:
            response = http.get("/healthz")
            assert response.status_code == 503
            assert response.json()[down].startswith("down")
            # Submitting is 503 with Retry-After too, not a traceback.
            response = http.post("/v1/jobs", json={"model": idle_model, "prompt": "y"})
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"]
            assert down.replace("rabbitmq", "broker") in error_of(response)["message"]


def test_metrics(http: httpx.Client, model_name: str) -> None:
    http.post("/v1/jobs", json={"model": model_name, "prompt": "count me", "max_tokens": 1})
    http.get("/v1/jobs/nope")
    text = http.get("/metrics").text
    assert 'genq_gateway_requests_total{method="POST",route="/v1/jobs",status="202"}' in text
    assert 'genq_gateway_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' \
        in text
    assert f'genq_gateway_jobs_submitted_total{{api="jobs",model="{model_name}"}}' in text
    assert "genq_gateway_request_seconds_bucket" in text


def test_openapi_document(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    for path in ("/v1/jobs", "/v1/jobs/{job_id}", "/v1/completions", "/v1/chat/completions",
                 "/v1/models", "/healthz", "/metrics", "/v1/files", "/v1/files/{file_id}/content",
                 "/v1/batches", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/cancel"):
        assert path in doc["paths"], path
    assert "JobSpec" in doc["components"]["schemas"]


def test_audit_log_has_a_line_per_submit_and_cancel(http: httpx.Client, idle_model: str,
                                                    audit_path: Path) -> None:
    job_id = http.post("/v1/jobs", json={"model": idle_model, "prompt": "audited"},
                       headers={"X-Genq-Tenant": "auditors"}).json()["id"]
    http.delete(f"/v1/jobs/{job_id}", headers={"X-Genq-Tenant": "auditors"})
    events = [json.loads(line) for line in audit_path.read_text().splitlines()]
    submit = next(e for e in events if e["event"] == "job.submit" and job_id in e["jobs"])
    assert submit["tenant"] == "auditors" and submit["api"] == "jobs"
    assert submit["client"] == "127.0.0.1" and submit["ts"]
    cancel = next(e for e in events if e["event"] == "job.cancel" and e.get("job") == job_id)
    assert cancel["outcome"] == "cancelled"
    assert "audited" not in audit_path.read_text()  # prompts are not logged


# -- 6. the Batch API ------------------------------------------------------------------------


def batch_file(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_line(custom_id: str, model: str, text: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}],
                     "max_tokens": 3, **body}}


def wait_for_batch(client: openai.OpenAI, batch_id: str, *statuses: str) -> Any:
    return wait_for(lambda: (b := client.batches.retrieve(batch_id)).status in statuses and b,
                    timeout=120, what=f"batch {batch_id} to be {' or '.join(statuses)}",
                    interval=0.3)


def lines_of(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id is not None
    text = client.files.content(file_id).text
    return {line["custom_id"]: line for line in map(json.loads, text.splitlines())}


@pytest.fixture(scope="module")
def batch_gateway(make_gateway: MakeGateway, worker: WorkerProcess) -> GatewayServer:
    return make_gateway(batch_priority=1, default_priority=5)


def test_batch_of_chat_requests_end_to_end(batch_gateway: GatewayServer,
                                           model_name: str) -> None:
    client = batch_gateway.openai()
    lines = [chat_line(f"req-{i}", model_name, f"hello {i}", ignore_eos=True) for i in range(4)]
    upload = client.files.create(file=("in.jsonl", batch_file(lines)), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes == len(batch_file(lines))
    assert client.files.content(upload.id).text == batch_file(lines).decode()
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "ci"})
    assert batch.status == "in_progress" and batch.metadata == {"run": "ci"}
    done = wait_for_batch(client, batch.id, "completed", "failed")
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (4, 4, 0)
    assert done.error_file_id is None and done.completed_at is not None
    output = lines_of(client, done.output_file_id)
    assert set(output) == {f"req-{i}" for i in range(4)}
    for line in output.values():
        assert line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200
        body = response["body"]
        assert body["object"] == "chat.completion"
        assert body["usage"]["completion_tokens"] == 3
        assert isinstance(body["choices"][0]["message"]["content"], str)
        # Batch requests run at the batch level, not at the gateway's default.
        with batch_gateway.http() as http:
            record = http.get(f"/v1/jobs/{response['request_id']}").json()
        assert record["priority"] == 1
        assert record["deadline_at"] == pytest.approx(done.expires_at, abs=2)
    assert batch.id in {b.id for b in client.batches.list(limit=100)}


def test_batch_of_completions_with_a_request_the_engine_refuses(
    batch_gateway: GatewayServer, model_name: str
) -> None:
    client = batch_gateway.openai()
    too_long = " ".join(f"word{i}" for i in range(2000))
    lines = [{"custom_id": cid, "method": "POST", "url": "/v1/completions",
              "body": {"model": model_name, "prompt": prompt, "max_tokens": 2}}
             for cid, prompt in (("fine", "Once upon"), ("long", too_long))]
    upload = client.files.create(file=("c.jsonl", batch_file(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/completions",
                                  completion_window="24h")
    done = wait_for_batch(client, batch.id, "completed", "failed")
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.failed == 1
    assert lines_of(client, done.output_file_id)["fine"]["response"]["body"]["object"] \
        == "text_completion"
    error = lines_of(client, done.error_file_id)["long"]
    assert error["response"]["status_code"] == 422
    assert "rejected by the engine" in error["response"]["body"]["error"]["message"]


def test_a_batch_with_bad_lines_fails_naming_each_line(batch_gateway: GatewayServer,
                                                       model_name: str) -> None:
    client = batch_gateway.openai()
    content = batch_file([chat_line("ok", model_name, "hi"),
                          chat_line("ok", model_name, "again"),  # custom_id used twice
                          chat_line("x", "no-such-model", "hi"),
                          chat_line("y", model_name, "hi", max_tokens=0)]) + b"{not json\n"
    upload = client.files.create(file=("bad.jsonl", content), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    by_line = {e.line: e for e in batch.errors.data}
    assert set(by_line) == {2, 3, 4, 5}
    assert by_line[2].code == "duplicate_custom_id"
    assert by_line[3].code == "model_not_found"
    assert "max_tokens: 0 is outside" in (by_line[4].message or "")
    assert by_line[5].code == "invalid_json_line"
    with pytest.raises(openai.UnprocessableEntityError, match="endpoint"):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/embeddings",
                              completion_window="24h")
    with pytest.raises(openai.UnprocessableEntityError, match="completion_window"):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                              completion_window="soon")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                              completion_window="24h")


def test_cancel_a_batch(batch_gateway: GatewayServer, idle_model: str) -> None:
    client = batch_gateway.openai()
    upload = client.files.create(file=("q.jsonl", batch_file(
        [chat_line(f"q{i}", idle_model, "wait") for i in range(3)])), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    counts = client.batches.retrieve(batch.id).request_counts
    assert counts is not None and counts.completed == 0
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    done = wait_for_batch(client, batch.id, "cancelled")
    assert done.cancelled_at is not None and done.output_file_id is None
    errors = lines_of(client, done.error_file_id)
    assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_a_batch_whose_window_closed_expires(batch_gateway: GatewayServer, idle_model: str,
                                             fleet_env: dict[str, str]) -> None:
    import redis
    client = batch_gateway.openai()
    upload = client.files.create(file=("e.jsonl", batch_file(
        [chat_line("late", idle_model, "wait")])), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="1h")
    # An hour is long for a test: move the window's end into the past instead.
    r = redis.Redis.from_url(ClientSettings().redis_url)
    r.hset(names.batch_key(batch.id), "expires_at", repr(time.time() - 1))
    r.close()
    done = wait_for_batch(client, batch.id, "expired")
    assert done.expired_at is not None
    assert lines_of(client, done.error_file_id)["late"]["error"]["code"] == "batch_expired"


def test_files_and_batches_are_the_tenants_own(keyed: GatewayServer, keys: KeyStore,
                                               model_name: str) -> None:
    a_key, _ = keys.create(new_tenant())
    b_key, _ = keys.create(new_tenant())
    a, b = keyed.openai(a_key), keyed.openai(b_key)
    upload = a.files.create(file=("a.jsonl", batch_file([chat_line("1", model_name, "hi")])),
                            purpose="batch")
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(upload.id)
    with pytest.raises(openai.NotFoundError):
        b.files.content(upload.id)
    with pytest.raises(openai.NotFoundError):
        b.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    batch = a.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                             completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(batch.id)
    assert batch.id not in {x.id for x in b.batches.list()}
    assert upload.id in {f.id for f in a.files.list()}
    assert upload.id not in {f.id for f in b.files.list()}


def test_uploads_have_their_own_size_limit(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(max_file_bytes=2048, max_body_bytes=1024)
    client = gateway.openai(max_retries=0)
    small = batch_file([{"custom_id": "1", "method": "POST", "url": "/v1/completions",
                         "body": {"model": "m", "prompt": "x" * 1200}}])
    assert client.files.create(file=("s.jsonl", small), purpose="batch").bytes == len(small)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", small * 3), purpose="batch")
    assert caught.value.status_code == 413
    assert "GENQ_MAX_FILE_BYTES" in str(caught.value)
    with pytest.raises(openai.UnprocessableEntityError, match="purpose"):
        client.files.create(file=("s.jsonl", small), purpose="fine-tune")


# -- schemathesis: no input, however odd, gets a 5xx ------------------------------------------


def test_schemathesis_finds_no_server_error(make_gateway: MakeGateway, worker: WorkerProcess,
                                            model_name: str) -> None:
    """Every operation in the OpenAPI document, fed schemathesis's generated requests (valid
    and invalid): never a 5xx. (Run from inside one test: schemathesis's pytest loader
    `from_fixture` does not work with pytest 9, and the schema exists only once a gateway
    runs.)"""
    # Small max_tokens so the requests that are valid run in a blink on the real worker.
    gateway = make_gateway(max_tokens_limit=4, default_max_tokens=4, completion_timeout=60)
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")

    def served(case: Any) -> Any:
        # Half the cases name the served model, so the generated requests get past the model
        # check into the limits, the broker and the worker.
        if isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = model_name
        return case

    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = operation.as_strategy()

        @hypothesis.given(case=hypothesis.strategies.one_of(cases, cases.map(served)))
        @hypothesis.settings(max_examples=25, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def no_server_error(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=90)

        no_server_error()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /v1/jobs" in tested and "POST /v1/chat/completions" in tested
