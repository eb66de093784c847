"""The gateway's pure parts: settings, keys, callers, error shapes, the body limit."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from pydantic import ValidationError as PydanticError

from genq.errors import ValidationError
from genq.settings import GatewaySettings
from producers.gateway.auth import Caller
from producers.gateway.bodylimit import BodyLimit
from producers.gateway.errors import ApiError, field_path, request_error
from producers.gateway.keys import check_tenant, hash_key, key_id


@pytest.mark.parametrize(
    ("host", "mode", "required"),
    [
        ("127.0.0.1", "auto", False),
        ("127.0.0.5", "auto", False),
        ("::1", "auto", False),
        ("[::1]", "auto", False),
        ("localhost", "auto", False),
        ("0.0.0.0", "auto", True),
        ("::", "auto", True),
        ("10.1.2.3", "auto", True),
        ("gateway.example", "auto", True),
        ("127.0.0.1", "on", True),
        ("0.0.0.0", "off", False),
    ],
)
def test_keys_are_on_by_default_off_loopback(host: str, mode: str, required: bool) -> None:
    settings = GatewaySettings(gateway_host=host, api_keys=mode)  # type: ignore[arg-type]
    assert settings.keys_required is required


def test_gateway_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    message = "batch_priority: 12 is outside the levels 0..9"
    with pytest.raises(PydanticError, match=re.escape(message)):
        GatewaySettings(batch_priority=12)
    with pytest.raises(PydanticError):
        GatewaySettings(gateway_port=70_000)
    with pytest.raises(PydanticError):
        GatewaySettings(api_keys="maybe")  # type: ignore[arg-type]
    monkeypatch.setenv("GENQ_TENANT_QUEUED_LIMIT", "7")
    monkeypatch.setenv("GENQ_API_KEYS", "on")
    settings = GatewaySettings()
    assert settings.tenant_queued_limit == 7 and settings.keys_required


def test_keys_are_stored_by_hash_and_named_by_its_start() -> None:
    secret = "genq-abc"
    assert hash_key(secret) != secret and len(hash_key(secret)) == 64
    assert key_id(secret) == hash_key(secret)[:12]


@pytest.mark.parametrize("tenant", ["", "a b", "x" * 101, "-lead", "a:b", "ü"])
def test_tenant_names_are_checked(tenant: str) -> None:
    with pytest.raises(ValidationError, match="tenant"):
        check_tenant(tenant)


def test_a_keyed_caller_sees_only_its_tenant() -> None:
    keyed = Caller(tenant="a", key_id="k", keyed=True)
    assert keyed.sees("a") and not keyed.sees("b")
    assert keyed.tenant_for(None) == "a" and keyed.tenant_for("a") == "a"
    with pytest.raises(ApiError) as caught:
        keyed.tenant_for("b")
    assert caught.value.status_code == 403
    local = Caller(tenant="default", key_id=None, keyed=False)
    assert local.sees("anyone") and local.tenant_for("b") == "b"


def test_field_paths_read_like_the_request() -> None:
    assert field_path(("body", "messages", 0, "content")) == "messages[0].content"
    assert field_path(("body", "messages", 0, "content", "str")) == "messages[0].content"
    assert field_path(("body", "list[function-after[x(), JobSpec]]", 1, "priority")) is None
    assert field_path(("header", "X-Genq-Priority")) == "X-Genq-Priority"
    assert field_path(("query", "wait")) == "wait"
    assert field_path(()) is None


def test_a_union_error_names_every_member() -> None:
    error = request_error(
        [
            {
                "type": "string_type",
                "loc": ("body", "prompt", "str"),
                "msg": "Input should be a valid string",
            },
            {
                "type": "list_type",
                "loc": ("body", "prompt", "list[str]"),
                "msg": "Input should be a valid list",
            },
            {"type": "missing", "loc": ("body", "model"), "msg": "Field required"},
        ]
    )
    assert error.status_code == 422 and error.param == "prompt"
    assert error.message == (
        "prompt: Input should be a valid string, or Input should be a valid list"
    )
    assert (
        request_error(
            [{"type": "missing", "loc": ("body", "model"), "msg": "Field required"}]
        ).message
        == "model: required"
    )


def run_asgi(
    app: Any, body: bytes, *, chunks: int = 1, content_length: bool = True
) -> tuple[int, dict[str, Any]]:
    """Drive an ASGI app with one POST; returns the status and the JSON body."""
    headers = [(b"content-length", str(len(body)).encode())] if content_length else []
    scope = {"type": "http", "path": "/v1/jobs", "method": "POST", "headers": headers}
    size = max(1, len(body) // chunks)
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        try:
            await app(scope, receive, send)
        except ApiError as exc:  # what FastAPI's exception handler would answer
            await exc.response()(scope, receive, send)

    asyncio.run(main())
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(payload)


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"n": len(body)}).encode()})


def test_body_limit_by_content_length_and_while_streaming() -> None:
    app = BodyLimit(echo_app, limit_for=lambda path: (100, "GENQ_MAX_BODY_BYTES"))
    assert run_asgi(app, b"x" * 100) == (200, {"n": 100})
    status, body = run_asgi(app, b"x" * 101)
    assert status == 413
    assert body["error"]["message"] == (
        "request body: 101 bytes is over the limit of 100 bytes (GENQ_MAX_BODY_BYTES)"
    )
    status, body = run_asgi(app, b"x" * 250, chunks=5, content_length=False)
    assert status == 413 and "GENQ_MAX_BODY_BYTES" in body["error"]["message"]
