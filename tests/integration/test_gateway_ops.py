"""The HTTP gateway: health, metrics, the OpenAPI document, the audit log, and a
schemathesis run finding no 5xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import schemathesis
from schemathesis.checks import not_a_server_error

from genq.local import WorkerProcess, free_port
from tests.integration.gateway_kit import (
    MakeGateway,
    error_of,
)

# -- 5. health, metrics, OpenAPI, audit ------------------------------------------------------


def test_healthz(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "redis": "ok", "rabbitmq": "ok", "gateway": body["gateway"]}
    assert body["gateway"].startswith("genq-gateway-")


def test_healthz_is_503_when_redis_or_the_broker_is_down(
    make_gateway: MakeGateway, idle_model: str
) -> None:
    dead = free_port()  # nothing listens there
    for broken, down in (
        (dict(redis_url=f"redis://127.0.0.1:{dead}/0"), "redis"),
        (dict(broker_url=f"amqp://guest:guest@127.0.0.1:{dead}/%2F"), "rabbitmq"),
    ):
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
    assert (
        'genq_gateway_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' in text
    )
    assert f'genq_gateway_jobs_submitted_total{{api="jobs",model="{model_name}"}}' in text
    assert "genq_gateway_request_seconds_bucket" in text


def test_openapi_document(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    for path in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/models",
        "/healthz",
        "/metrics",
        "/v1/files",
        "/v1/files/{file_id}/content",
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/cancel",
    ):
        assert path in doc["paths"], path
    assert "JobSpec" in doc["components"]["schemas"]


def test_audit_log_has_a_line_per_submit_and_cancel(
    http: httpx.Client, idle_model: str, audit_path: Path
) -> None:
    job_id = http.post(
        "/v1/jobs",
        json={"model": idle_model, "prompt": "audited"},
        headers={"X-Genq-Tenant": "auditors"},
    ).json()["id"]
    http.delete(f"/v1/jobs/{job_id}", headers={"X-Genq-Tenant": "auditors"})
    events = [json.loads(line) for line in audit_path.read_text().splitlines()]
    submit = next(e for e in events if e["event"] == "job.submit" and job_id in e["jobs"])
    assert submit["tenant"] == "auditors" and submit["api"] == "jobs"
    assert submit["client"] == "127.0.0.1" and submit["ts"]
    cancel = next(e for e in events if e["event"] == "job.cancel" and e.get("job") == job_id)
    assert cancel["outcome"] == "cancelled"
    assert "audited" not in audit_path.read_text()  # prompts are not logged


# -- schemathesis: no input, however odd, gets a 5xx ------------------------------------------


def test_schemathesis_finds_no_server_error(
    make_gateway: MakeGateway, worker: WorkerProcess, model_name: str
) -> None:
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
        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        def no_server_error(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=90)

        no_server_error()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert "POST /v1/jobs" in tested and "POST /v1/chat/completions" in tested
