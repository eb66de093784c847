"""OpenAI's streaming shapes: the chunks of a streamed completion or chat completion, as
server-sent events. Pure: no I/O.

A stream is `data: <chunk>` events, each choice's text in pieces as it is generated, then a
chunk per choice with its `finish_reason`, then (with `stream_options.include_usage`) one
chunk with no choices and the usage, then `data: [DONE]`. An error after the stream began
can't be a status code any more: it is a `data: {"error": ...}` event, which OpenAI's
clients raise, and the stream ends there."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DONE", "ChunkWriter", "sse"]

DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


@dataclass(frozen=True, slots=True)
class ChunkWriter:
    """The chunks of one streamed response."""

    kind: Literal["completion", "chat"]
    id: str
    """The response's ID (`cmpl-<first job ID>` / `chatcmpl-...`), the same in every chunk."""
    model: str
    created: int
    include_usage: bool = False

    def role(self, index: int) -> bytes:
        """A chat choice opens with the assistant's role, as OpenAI's server sends it."""
        return self._chunk(index, {"role": "assistant", "content": ""}, None)

    def text(self, index: int, piece: str) -> bytes:
        return self._chunk(index, {"content": piece} if self.kind == "chat" else piece, None)

    def finish(self, index: int, reason: str | None) -> bytes:
        return self._chunk(index, {} if self.kind == "chat" else "", reason or "stop")

    def usage(self, usage: dict[str, int]) -> bytes:
        return sse({**self._head(), "choices": [], "usage": usage})

    def _head(self) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }

    def _chunk(self, index: int, content: Any, reason: str | None) -> bytes:
        choice: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": reason}
        if self.kind == "chat":
            choice["delta"] = content
        else:
            choice["text"] = content
        body = {**self._head(), "choices": [choice]}
        if self.include_usage:  # OpenAI: every chunk has the field; only the last fills it
            body["usage"] = None
        return sse(body)
