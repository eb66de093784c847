"""Request body limits: 413 before the body is read when Content-Length says it is too
big, and as soon as a chunked body passes the limit while it streams in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from producers.gateway.errors import ApiError

__all__ = ["BodyLimit", "too_large"]


def too_large(size: int | None, limit: int, setting: str) -> ApiError:
    got = f"{size} bytes" if size is not None else "the request body"
    return ApiError(
        413,
        f"request body: {got} is over the limit of {limit} bytes ({setting})",
        param="body",
        code="request_too_large",
    )


class BodyLimit:
    """ASGI middleware. `limit_for(path)` gives the limit and the setting that sets it."""

    def __init__(self, app: Any, *, limit_for: Callable[[str], tuple[int, str]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope["path"])
        length = _content_length(scope)
        if length is not None and length > limit:
            await too_large(length, limit, setting).response()(scope, receive, send)
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException: FastAPI's body parsing passes it on as it is.
                    raise too_large(None, limit, setting)
            return message

        await self.app(scope, limited, send)


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
