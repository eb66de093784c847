"""The app factory: `create_app(settings)` is the whole gateway, ready for any ASGI server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from genq import __version__
from genq.settings import GatewaySettings
from producers import Client
from producers.gateway import batches, completions, files, jobs, ops
from producers.gateway.bodylimit import BodyLimit
from producers.gateway.context import Gateway
from producers.gateway.errors import install_handlers
from producers.gateway.metrics import MetricsMiddleware
from producers.gateway.submission import PRIORITY_HEADER

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_UPLOAD_PATH = "/v1/files"


def create_app(
    settings: GatewaySettings | None = None,
    *,
    client: Client | None = None,
) -> FastAPI:
    """The gateway app. It connects lazily: it starts, and /healthz says 503, while the
    broker or Redis is down."""
    settings = settings or GatewaySettings()
    gw = Gateway.build(settings, client=client)
    if not settings.keys_required and not settings.binds_loopback:
        log.warning(
            "API keys are off: anyone who can reach %s may submit and read jobs",
            settings.gateway_host,
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        gw.start()
        try:
            yield
        finally:
            await gw.close()

    app = FastAPI(
        title="genq gateway",
        version=__version__,
        lifespan=lifespan,
        description="REST jobs API and OpenAI-compatible API for a genq fleet.",
    )
    app.state.gateway = gw
    install_handlers(app)
    for module in (jobs, completions, files, batches, ops):
        app.include_router(module.router)

    def limit_for(path: str) -> tuple[int, str]:
        if path == _UPLOAD_PATH:
            return settings.max_file_bytes, "GENQ_MAX_FILE_BYTES"
        return settings.max_body_bytes, "GENQ_MAX_BODY_BYTES"

    # The last added is the outermost: metrics see the 413s the body limit answers.
    app.add_middleware(BodyLimit, limit_for=limit_for)
    app.add_middleware(MetricsMiddleware, metrics=gw.metrics)
    _document(app, jobs.DOCUMENTED_MODELS, settings)
    return app


def _document(app: FastAPI, models: list[Any], settings: GatewaySettings) -> None:
    """Add the models routes parse themselves (see jobs.py) to the OpenAPI components, and
    write this fleet's limits into the document: its levels, max_tokens limit and models."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, defs = models_json_schema(
                [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.get("$defs", {}))
            for name in ("JobSpec", "CompletionRequest", "ChatRequest"):
                _fleet_limits(components.get(name, {}).get("properties", {}), settings)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    headers = {
                        p["name"]: p["schema"]
                        for p in operation.get("parameters", [])
                        if p.get("in") == "header"
                    }
                    _fleet_limits({"priority": headers.get(PRIORITY_HEADER)}, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _fleet_limits(properties: dict[str, Any], settings: GatewaySettings) -> None:
    bounds = {
        "priority": (0, settings.levels - 1),
        "max_tokens": (1, settings.max_tokens_limit),
        "max_completion_tokens": (1, settings.max_tokens_limit),
    }
    for name, (low, high) in bounds.items():
        prop = properties.get(name)
        if not prop:
            continue
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "integer":
                branch.update(minimum=low, maximum=high)
    if "model" in properties and settings.models:
        properties["model"]["examples"] = list(settings.models)
