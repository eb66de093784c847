"""The HTTP gateway against a real worker: the jobs API over plain HTTP (submit, long-poll,
cancel, bad input, body and job-count limits) and backpressure (429)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from genq.local import wait_for
from tests.integration.gateway_kit import (
    MakeGateway,
    drop_queues,
    error_of,
    new_tenant,
    queued_messages,
)

# -- 1. the jobs API ----------------------------------------------------------------------


def test_submit_one_job_and_long_poll_its_result(http: httpx.Client, model_name: str) -> None:
    response = http.post(
        "/v1/jobs",
        json={
            "model": model_name,
            "prompt": "Once upon a time",
            "max_tokens": 8,
            "ignore_eos": True,
        },
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    record = http.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
    assert record["state"] == "succeeded", record
    assert record["id"] == job_id and record["model"] == model_name
    assert record["usage"]["completion_tokens"] == 8
    assert isinstance(record["text"], str)
    assert record["tenant"] == "default"
    for field in (
        "enqueued_at",
        "started_at",
        "finished_at",
        "worker",
        "attempts",
        "priority",
        "cached",
        "error",
    ):
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
        response = http.post(
            "/v1/jobs", json={"model": idle_model, "prompt": "p", **body}, headers=headers
        )
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
    http: httpx.Client,
    idle_model: str,
    body: dict[str, Any],
    status: int,
    param: str | None,
    words: str,
) -> None:
    before = queued_messages(idle_model)
    response = http.post("/v1/jobs", json={"model": idle_model, "prompt": "hi", **body})
    assert response.status_code == status, response.text
    error = error_of(response)
    assert words in error["message"]
    assert error["param"] == param
    # ... and in a list, the bad one is named by its index; the good one is not published.
    response = http.post(
        "/v1/jobs",
        json=[
            {"model": idle_model, "prompt": "good"},
            {"model": idle_model, "prompt": "hi", **body},
        ],
    )
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
        http.post(
            "/v1/jobs",
            json={"model": idle_model, "prompt": "hi"},
            headers={"X-Genq-Priority": "urgent"},
        ),
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


def test_limits_on_body_size_and_jobs_per_request(
    make_gateway: MakeGateway, idle_model: str
) -> None:
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


# -- 4. backpressure -------------------------------------------------------------------------


def test_a_tenant_over_its_queued_limit_gets_429(
    make_gateway: MakeGateway, idle_model: str
) -> None:
    gateway = make_gateway(tenant_queued_limit=3, model_queued_limit=0)
    tenant = new_tenant()
    with gateway.http(**{"X-Genq-Tenant": tenant}) as http:
        ids = [
            http.post("/v1/jobs", json={"model": idle_model, "prompt": f"q{i}"}).json()["id"]
            for i in range(3)
        ]
        response = http.post("/v1/jobs", json={"model": idle_model, "prompt": "one too many"})
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "2"
        assert "limit of 3 (GENQ_TENANT_QUEUED_LIMIT)" in error_of(response)["message"]
        # A list that would cross the limit is refused whole.
        assert http.post("/v1/jobs", json=[{"model": idle_model, "prompt": "a"}]).status_code == 429
        # Another tenant is not held back.
        other = http.post(
            "/v1/jobs",
            json={"model": idle_model, "prompt": "x"},
            headers={"X-Genq-Tenant": new_tenant()},
        )
        assert other.status_code == 202
        # A job that ends makes room (once the counted queue is re-read, within ~1 s).
        http.delete(f"/v1/jobs/{ids[0]}")
        wait_for(
            lambda: (
                http.post("/v1/jobs", json={"model": idle_model, "prompt": "room"}).status_code
                == 202
            ),
            timeout=10,
            what="room after a cancel",
            interval=0.3,
        )
    with pytest.raises(openai.RateLimitError):
        gateway.openai(max_retries=0, default_headers={"X-Genq-Tenant": tenant}).completions.create(
            model=idle_model, prompt="hi", max_tokens=2
        )


def test_a_model_over_its_queued_limit_gets_429(
    make_gateway: MakeGateway, fleet_env: dict[str, str]
) -> None:
    model = f"idle-{uuid.uuid4().hex[:8]}"
    gateway = make_gateway(
        models=[model], model_queued_limit=2, tenant_queued_limit=0, queue_depth_ttl=0
    )
    try:
        with gateway.http() as http:
            for _ in range(2):  # two tenants: the model's limit counts everyone's jobs
                response = http.post(
                    "/v1/jobs",
                    json={"model": model, "prompt": "x"},
                    headers={"X-Genq-Tenant": new_tenant()},
                )
                assert response.status_code == 202
            response = http.post(
                "/v1/jobs",
                json={"model": model, "prompt": "x"},
                headers={"X-Genq-Tenant": new_tenant()},
            )
            assert response.status_code == 429
            assert "limit of 2 (GENQ_MODEL_QUEUED_LIMIT)" in error_of(response)["message"]
            assert int(response.headers["Retry-After"]) >= 1
            metrics = http.get("/metrics").text
            assert 'genq_gateway_backpressure_rejections_total{limit="model"} 1.0' in metrics
    finally:
        drop_queues(model)
