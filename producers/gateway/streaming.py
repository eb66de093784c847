"""`stream: true` completions: the jobs' text as server-sent events while workers produce it.

The jobs are submitted like any completion's, with `stream` set so their workers publish
their text as it is generated (workers/progress.py); `relay` reads it back and this turns it
into OpenAI's chunks (chunks.py). Everything that can be refused is refused before the
stream starts, with a status code; what goes wrong after (a job failed, the completion
timed out) is an error event.

A client that hangs up mid-stream has its unfinished jobs cancelled, as for a completion
that was waited on: nobody is left to read them. The server cancels the response when the
client goes; the cancel then runs shielded from that cancellation (`_EventStream`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from genq.errors import GenqError
from genq.schema import JobRecord, JobState
from producers.gateway.auth import Caller
from producers.gateway.chunks import DONE, ChunkWriter, sse
from producers.gateway.context import Gateway
from producers.gateway.errors import ApiError, error_body, job_failure
from producers.gateway.relay import Piece, relay
from producers.gateway.wire import usage_of

__all__ = ["stream_response"]


def stream_response(
    gw: Gateway,
    who: Caller,
    ids: list[str],
    *,
    kind: Literal["completion", "chat"],
    model: str,
    n: int,
    include_usage: bool,
    echo_prompts: list[str] | None,
    headers: dict[str, str],
    on_close: Callable[[], None] | None = None,
) -> StreamingResponse:
    """The response; `on_close` runs once it has ended, however it ended."""
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    writer = ChunkWriter(
        kind=kind,
        id=f"{prefix}-{ids[0]}",
        model=model,
        created=int(time.time()),
        include_usage=include_usage,
    )
    state = _State()
    body = _events(gw, ids, writer, state, n=n, echo_prompts=echo_prompts)

    async def close() -> None:
        try:
            await body.aclose()
            if state.cancel_rest and len(state.records) < len(ids):
                await _abandon(
                    gw, who, [job for k, job in enumerate(ids) if k not in state.records]
                )
        finally:
            if on_close is not None:
                on_close()

    # No buffering anywhere on the way: a proxy that holds the events defeats streaming.
    return _EventStream(
        body, close, headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


@dataclass
class _State:
    records: dict[int, JobRecord] = field(default_factory=dict)
    """The jobs that ended, by choice index."""
    cancel_rest: bool = True
    """Whether jobs still running when the response ends are cancelled: yes when the client
    hung up or the response failed, no when it timed out (they go on, as a waited-on
    completion's do)."""


class _EventStream(StreamingResponse):
    """A StreamingResponse that runs `close` however the response ends. When the client
    hangs up the server cancels the response wherever it is (inside the event generator,
    or in a send between two events, where no `finally` of the generator would run), so the
    clean-up is here, shielded from that cancellation."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
        *,
        headers: dict[str, str],
    ) -> None:
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self._close = close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()


async def _events(
    gw: Gateway,
    ids: list[str],
    writer: ChunkWriter,
    state: _State,
    *,
    n: int,
    echo_prompts: list[str] | None,
) -> AsyncGenerator[bytes, None]:
    records = state.records
    timeout = gw.settings.completion_timeout
    if writer.kind == "chat":
        for index in range(len(ids)):
            yield writer.role(index)
    if echo_prompts is not None:
        for index in range(len(ids)):
            yield writer.text(index, echo_prompts[index // n])
    try:
        async for event in relay(gw.streams, gw.waiter, ids, deadline=time.monotonic() + timeout):
            if isinstance(event, Piece):
                yield writer.text(event.index, event.text)
                continue
            records[event.index] = event.record
            if event.record.state is not JobState.SUCCEEDED:
                # One choice failed: the response fails, as a waited-on one would.
                yield _error(job_failure(event.record))
                return
            yield writer.finish(event.index, event.record.finish_reason)
    except TimeoutError:
        state.cancel_rest = False
        yield _error(
            ApiError(
                504,
                f"jobs {', '.join(ids)} did not end within {timeout:g} s "
                "(GENQ_COMPLETION_TIMEOUT); they go on: GET /v1/jobs/{id}",
                code="timeout",
                type="server_error",
            )
        )
        return
    except (GenqError, RedisError) as exc:  # a record gone (expired), or Redis failing
        yield _error(ApiError(500, f"stream interrupted: {exc}", type="server_error"))
        return
    if writer.include_usage:
        yield writer.usage(usage_of([records[i] for i in range(len(ids))], n))
    yield DONE


def _error(error: ApiError) -> bytes:
    return sse(error_body(error.message, type=error.type, param=error.param, code=error.code))


async def _abandon(gw: Gateway, who: Caller, job_ids: list[str]) -> None:
    """Cancel jobs the client no longer waits for (it hung up, or the stream failed)."""
    for job_id in job_ids:
        with contextlib.suppress(GenqError):  # already gone: nothing to cancel
            await gw.call(gw.client.cancel, job_id)
    gw.audit.write(
        "job.cancel",
        tenant=who.tenant,
        key=who.key_id,
        client=who.address,
        jobs=job_ids,
        reason="stream ended before the jobs",
    )
