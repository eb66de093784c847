"""The HTTP gateway against a real worker: OpenAI's Batch API end to end (files, batches,
output and error files, cancel, expiry, tenants)."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from genq import names
from genq.local import WorkerProcess, wait_for
from genq.settings import ClientSettings
from producers.gateway.keys import KeyStore
from tests.integration.gateway_kit import (
    GatewayServer,
    MakeGateway,
    new_tenant,
)

# -- 6. the Batch API ------------------------------------------------------------------------


def batch_file(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_line(custom_id: str, model: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 3,
            **body,
        },
    }


def wait_for_batch(client: openai.OpenAI, batch_id: str, *statuses: str) -> Any:
    return wait_for(
        lambda: (b := client.batches.retrieve(batch_id)).status in statuses and b,
        timeout=120,
        what=f"batch {batch_id} to be {' or '.join(statuses)}",
        interval=0.3,
    )


def lines_of(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id is not None
    text = client.files.content(file_id).text
    return {line["custom_id"]: line for line in map(json.loads, text.splitlines())}


@pytest.fixture(scope="module")
def batch_gateway(make_gateway: MakeGateway, worker: WorkerProcess) -> GatewayServer:
    return make_gateway(batch_priority=1, default_priority=5)


def test_batch_of_chat_requests_end_to_end(batch_gateway: GatewayServer, model_name: str) -> None:
    client = batch_gateway.openai()
    lines = [chat_line(f"req-{i}", model_name, f"hello {i}", ignore_eos=True) for i in range(4)]
    upload = client.files.create(file=("in.jsonl", batch_file(lines)), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes == len(batch_file(lines))
    assert client.files.content(upload.id).text == batch_file(lines).decode()
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "ci"},
    )
    assert batch.status == "in_progress" and batch.metadata == {"run": "ci"}
    done = wait_for_batch(client, batch.id, "completed", "failed")
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (
        done.request_counts.total,
        done.request_counts.completed,
        done.request_counts.failed,
    ) == (4, 4, 0)
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
    lines = [
        {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": model_name, "prompt": prompt, "max_tokens": 2},
        }
        for cid, prompt in (("fine", "Once upon"), ("long", too_long))
    ]
    upload = client.files.create(file=("c.jsonl", batch_file(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
    )
    done = wait_for_batch(client, batch.id, "completed", "failed")
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.failed == 1
    assert (
        lines_of(client, done.output_file_id)["fine"]["response"]["body"]["object"]
        == "text_completion"
    )
    error = lines_of(client, done.error_file_id)["long"]
    assert error["response"]["status_code"] == 422
    assert "rejected by the engine" in error["response"]["body"]["error"]["message"]


def test_a_batch_with_bad_lines_fails_naming_each_line(
    batch_gateway: GatewayServer, model_name: str
) -> None:
    client = batch_gateway.openai()
    content = (
        batch_file(
            [
                chat_line("ok", model_name, "hi"),
                chat_line("ok", model_name, "again"),  # custom_id used twice
                chat_line("x", "no-such-model", "hi"),
                chat_line("y", model_name, "hi", max_tokens=0),
            ]
        )
        + b"{not json\n"
    )
    upload = client.files.create(file=("bad.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    by_line = {e.line: e for e in batch.errors.data}
    assert set(by_line) == {2, 3, 4, 5}
    assert by_line[2].code == "duplicate_custom_id"
    assert by_line[3].code == "model_not_found"
    assert "max_tokens: 0 is outside" in (by_line[4].message or "")
    assert by_line[5].code == "invalid_json_line"
    with pytest.raises(openai.UnprocessableEntityError, match="endpoint"):
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    with pytest.raises(openai.UnprocessableEntityError, match="completion_window"):
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="soon"
        )  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )


def test_cancel_a_batch(batch_gateway: GatewayServer, idle_model: str) -> None:
    client = batch_gateway.openai()
    upload = client.files.create(
        file=("q.jsonl", batch_file([chat_line(f"q{i}", idle_model, "wait") for i in range(3)])),
        purpose="batch",
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
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


def test_a_batch_whose_window_closed_expires(
    batch_gateway: GatewayServer, idle_model: str, fleet_env: dict[str, str]
) -> None:
    import redis

    client = batch_gateway.openai()
    upload = client.files.create(
        file=("e.jsonl", batch_file([chat_line("late", idle_model, "wait")])), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="1h"
    )
    # An hour is long for a test: move the window's end into the past instead.
    r = redis.Redis.from_url(ClientSettings().redis_url)
    r.hset(names.batch_key(batch.id), "expires_at", repr(time.time() - 1))
    r.close()
    done = wait_for_batch(client, batch.id, "expired")
    assert done.expired_at is not None
    assert lines_of(client, done.error_file_id)["late"]["error"]["code"] == "batch_expired"


def test_files_and_batches_are_the_tenants_own(
    keyed: GatewayServer, keys: KeyStore, model_name: str
) -> None:
    a_key, _ = keys.create(new_tenant())
    b_key, _ = keys.create(new_tenant())
    a, b = keyed.openai(a_key), keyed.openai(b_key)
    upload = a.files.create(
        file=("a.jsonl", batch_file([chat_line("1", model_name, "hi")])), purpose="batch"
    )
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(upload.id)
    with pytest.raises(openai.NotFoundError):
        b.files.content(upload.id)
    with pytest.raises(openai.NotFoundError):
        b.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    batch = a.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(batch.id)
    assert batch.id not in {x.id for x in b.batches.list()}
    assert upload.id in {f.id for f in a.files.list()}
    assert upload.id not in {f.id for f in b.files.list()}


def test_uploads_have_their_own_size_limit(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(max_file_bytes=2048, max_body_bytes=1024)
    client = gateway.openai(max_retries=0)
    small = batch_file(
        [
            {
                "custom_id": "1",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": "m", "prompt": "x" * 1200},
            }
        ]
    )
    assert client.files.create(file=("s.jsonl", small), purpose="batch").bytes == len(small)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", small * 3), purpose="batch")
    assert caught.value.status_code == 413
    assert "GENQ_MAX_FILE_BYTES" in str(caught.value)
    with pytest.raises(openai.UnprocessableEntityError, match="purpose"):
        client.files.create(file=("s.jsonl", small), purpose="fine-tune")
