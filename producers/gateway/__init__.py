"""The HTTP gateway: a REST jobs API and an OpenAI-compatible API in front of a genq fleet.

`create_app(settings)` builds the FastAPI app; `serve(host=, port=)` runs it with uvicorn
(`genq gateway`). Both are imported on first use: `genq keys` and the rest of the CLI load
this package without paying for FastAPI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.gateway.app import create_app
    from producers.gateway.cli import serve

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from producers.gateway.app import create_app

        return create_app
    if name == "serve":
        from producers.gateway.cli import serve

        return serve
    raise AttributeError(name)
