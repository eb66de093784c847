"""The HTTP gateway against a real worker, through the official `openai` package:
completions and chat, streamed and not, errors, the prompt-token limit, timeouts, and
clients that hang up."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from genq import names
from genq.local import WorkerProcess, wait_for
from genq.settings import ClientSettings
from tests.integration.gateway_kit import (
    GatewayServer,
    MakeGateway,
    drop_queues,
    error_of,
    new_tenant,
)

# -- 2. OpenAI-compatible completions and chat -----------------------------------------------


def test_openai_completions(gateway: GatewayServer, model_name: str) -> None:
    client = gateway.openai()
    completion = client.completions.create(
        model=model_name,
        prompt="Once upon a time",
        max_tokens=6,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert completion.object == "text_completion"
    assert completion.model == model_name
    (choice,) = completion.choices
    assert isinstance(choice.text, str) and choice.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6

    # Several prompts, n choices each, indexed prompt by prompt; greedy, so choices agree.
    many = client.completions.create(
        model=model_name, prompt=["one", "two"], n=2, max_tokens=3, temperature=0, echo=True
    )
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text.startswith("one") and many.choices[2].text.startswith("two")
    assert many.choices[0].text == many.choices[1].text


def test_openai_chat_completions(gateway: GatewayServer, model_name: str) -> None:
    client = gateway.openai()
    chat = client.chat.completions.create(
        model=model_name,
        max_tokens=5,
        temperature=0.7,
        seed=1,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        ],
        extra_body={"ignore_eos": True, "priority": 5},
    )
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
    with pytest.raises(openai.UnprocessableEntityError, match="logprobs"):
        client.completions.create(model=model_name, prompt="hi", max_tokens=4, logprobs=2)
    # The prompt is over the worker's context (512 tokens). The gateway counts it with the
    # tokenizer the worker advertises; one without a tokenizer leaves it to the engine.
    long_prompt = " ".join(f"word{i}" for i in range(2000))
    with pytest.raises(openai.UnprocessableEntityError, match="over the limit of 511"):
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
            http.post(
                "/v1/chat/completions",
                timeout=1.5,
                json={"model": idle_model, "messages": [{"role": "user", "content": "?"}]},
            )

        def submitted() -> str | None:
            for event in map(json.loads, audit_path.read_text().splitlines()):
                if event["event"] == "job.submit" and event["tenant"] == tenant:
                    return str(event["jobs"][0])
            return None

        job_id = wait_for(submitted, timeout=10, what="the completion's job")
        wait_for(
            lambda: http.get(f"/v1/jobs/{job_id}").json()["state"] == "cancelled",
            timeout=15,
            what="the abandoned job to be cancelled",
            interval=0.2,
        )


def test_a_prompt_over_the_token_limit_is_422_naming_the_limit(
    make_gateway: MakeGateway,
    model_name: str,
    tiny_model: Path,
    worker: WorkerProcess,
) -> None:
    """Counted at the gateway, before anything is queued: against GENQ_MAX_PROMPT_TOKENS
    with a configured tokenizer, and against the context the worker advertises (512, less one
    for the output) with the tokenizer it advertises."""
    limited = make_gateway(max_prompt_tokens=20, tokenizers={model_name: str(tiny_model)})
    client = limited.openai(max_retries=0)
    words = " ".join(f"word{i}" for i in range(40))
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.completions.create(model=model_name, prompt=["short", words], max_tokens=4)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "prompt[1]" and error["code"] == "context_length_exceeded"
    assert "over the limit of 20 prompt tokens (GENQ_MAX_PROMPT_TOKENS)" in error["message"]
    with pytest.raises(openai.UnprocessableEntityError, match=r"messages: .* over the limit"):
        client.chat.completions.create(
            model=model_name, max_tokens=4, messages=[{"role": "user", "content": words}]
        )
    with limited.http() as http:
        response = http.post("/v1/jobs", json={"model": model_name, "prompt": words})
        assert response.status_code == 422
        assert error_of(response)["param"] == "prompt"
    # Under the limit, it runs.
    assert client.completions.create(model=model_name, prompt="short", max_tokens=2).choices

    advertised = make_gateway().openai(max_retries=0)
    long_prompt = " ".join(f"word{i}" for i in range(600))
    with pytest.raises(
        openai.UnprocessableEntityError,
        match=r"over the limit of 511 prompt tokens .*context of 512",
    ):
        advertised.completions.create(model=model_name, prompt=long_prompt, max_tokens=4)


# -- streaming ---------------------------------------------------------------------------------


def stored(gateway: GatewayServer, job_id: str) -> dict[str, Any]:
    with gateway.http() as http:
        record = http.get(f"/v1/jobs/{job_id}").json()
    assert isinstance(record, dict)
    return record


def progress_entries(job_id: str) -> list[dict[str, str]]:
    """What the worker published to the job's progress stream."""
    r = redis.Redis.from_url(ClientSettings().redis_url, decode_responses=True)
    try:
        return [fields for _id, fields in r.xrange(names.progress_key(job_id))]
    finally:
        r.close()


def test_a_streamed_completion_arrives_in_chunks_while_the_worker_runs_it(
    gateway: GatewayServer, model_name: str
) -> None:
    client = gateway.openai()
    # Long enough to span several of the worker's progress writes even on a loaded machine:
    # the tiny model makes a token in a millisecond or two, and while the worker's event loop
    # is busy elsewhere vLLM merges the deltas it has not taken; 24 and 96 tokens were each
    # once all taken at once, in one entry, in a full CI run.
    raw = client.completions.with_raw_response.create(
        model=model_name,
        prompt="Once upon a time",
        max_tokens=320,
        temperature=0.8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    (job_id,) = raw.headers["X-Genq-Job-Ids"].split(",")
    chunks = list(raw.parse())
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == ["length"]
    assert all(c.id == f"cmpl-{job_id}" and c.model == model_name for c in chunks)
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage is not None and usage.completion_tokens == 320
    record = stored(gateway, job_id)
    assert record["state"] == "succeeded" and "".join(pieces) == record["text"]
    # The text came from the worker as it went: several pieces in the job's progress stream,
    # then its end, and they add up to the stored text.
    entries = progress_entries(job_id)
    texts = [e["t"] for e in entries if "t" in e]
    assert len(texts) >= 2 and "".join(texts) == record["text"]
    assert entries[-1]["end"] == "ok"


def test_a_streamed_chat_with_two_choices(gateway: GatewayServer, model_name: str) -> None:
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model=model_name,
        n=2,
        max_tokens=12,
        temperature=0.9,
        seed=3,
        stream=True,
        messages=[{"role": "user", "content": "tell me a story"}],
        extra_body={"ignore_eos": True},
    )
    ids = raw.headers["X-Genq-Job-Ids"].split(",")
    texts: dict[int, str] = {0: "", 1: ""}
    roles, finished = set(), {}
    for chunk in raw.parse():
        assert chunk.object == "chat.completion.chunk" and chunk.usage is None
        (choice,) = chunk.choices
        if choice.delta.role:
            roles.add(choice.index)
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert roles == {0, 1} and finished == {0: "length", 1: "length"}
    for index, job_id in enumerate(ids):
        assert texts[index] == stored(gateway, job_id)["text"]


def test_a_cached_result_streams_as_one_chunk(gateway: GatewayServer, model_name: str) -> None:
    client = gateway.openai()
    request: dict[str, Any] = {
        "model": model_name,
        "prompt": f"cached {uuid.uuid4().hex}",
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }
    first = "".join(c.choices[0].text for c in client.completions.create(**request) if c.choices)
    raw = client.completions.with_raw_response.create(**request)
    (job_id,) = raw.headers["X-Genq-Job-Ids"].split(",")
    chunks = [c for c in raw.parse() if c.choices and c.choices[0].text]
    assert stored(gateway, job_id)["cached"] is True
    assert [c.choices[0].text for c in chunks] == [first]


def test_a_client_that_hangs_up_mid_stream_has_its_jobs_cancelled(
    gateway: GatewayServer, idle_model: str
) -> None:
    """The stream has begun (the assistant's role chunks came), its jobs are queued on a
    model no worker serves; the client goes away: both jobs are cancelled, never to run."""
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model=idle_model, n=2, stream=True, messages=[{"role": "user", "content": "hi"}]
    )
    ids = raw.headers["X-Genq-Job-Ids"].split(",")
    stream = raw.parse()
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    stream.close()
    for job_id in ids:
        record = wait_for(
            lambda j=job_id: (r := stored(gateway, j))["state"] != "queued" and r,
            timeout=30,
            what="the abandoned job to end",
            interval=0.2,
        )
        assert record["state"] == "cancelled"


def test_a_running_streamed_job_is_aborted_when_its_client_hangs_up(
    make_gateway: MakeGateway, make_worker: Any
) -> None:
    # A model of its own, on a worker with a long context: 1,900 tokens take the test model
    # seconds, so the job is still running when the hang-up reaches the worker (the shared
    # worker's 512-token context ends a job within about a second, often first).
    model = f"long-{uuid.uuid4().hex[:6]}"
    worker = make_worker(model_name=model, max_num_seqs=4, max_model_len=2048, name="long")
    gateway = make_gateway(models=[model])
    try:
        client = gateway.openai()
        raw = client.completions.with_raw_response.create(
            model=model,
            prompt="a very long story",
            max_tokens=1900,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        (job_id,) = raw.headers["X-Genq-Job-Ids"].split(",")
        stream = raw.parse()
        first = next(iter(stream))
        assert first.choices[0].text  # it was streaming when the client went away
        stream.close()
        hung_up_at = time.time()
        record = wait_for(
            lambda: (r := stored(gateway, job_id))["state"] != "running" and r,
            timeout=60,
            what="the abandoned job to end",
            interval=0.2,
        )
        # What to look at if it ran to the end: when it ran, how its text was published
        # (one entry would mean nothing streamed before the end), the worker's last words.
        entries = redis.Redis.from_url(ClientSettings().redis_url).xlen(names.progress_key(job_id))
        story = (
            f"hung up {hung_up_at - record['started_at']:.2f} s after the start, job ran "
            f"{record['finished_at'] - record['started_at']:.2f} s, {entries} progress "
            f"entries; worker log:\n{worker.tail(30)}"
        )
    finally:
        worker.stop()
        drop_queues(model)
    assert record["state"] == "cancelled", story
    assert record["error"] == "cancelled by the client while running"


def test_a_stream_whose_job_fails_ends_with_an_error_event(
    make_gateway: MakeGateway, model_name: str, worker: WorkerProcess
) -> None:
    """Past the gateway's own checks a failure can only be reported in the stream. Here the
    gateway has no tokenizer (the one configured is not on this machine), so an over-long
    prompt passes it and the engine refuses the job."""
    blind = make_gateway(tokenizers={model_name: "/nonexistent/tokenizer"})
    client = blind.openai(max_retries=0)
    long_prompt = " ".join(f"word{i}" for i in range(2000))
    with pytest.raises(openai.APIError, match="rejected by the engine"):
        for _chunk in client.completions.create(
            model=model_name, stream=True, max_tokens=4, prompt=long_prompt
        ):
            pass
