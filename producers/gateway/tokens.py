"""The prompt-token limit, checked at the gateway: a prompt that can't fit is a 422 naming
the limit at once, not a job that queues, reaches a worker and fails there.

Tokens are counted with the model's own tokenizer (`transformers.AutoTokenizer`): the one
`GENQ_TOKENIZERS` names for the model, else the one its workers advertise in their heartbeat
(`genq:worker:<host>`: `model`, `tokenizer`, `max_model_len`). The limit is
`GENQ_MAX_PROMPT_TOKENS` if set, and in any case the context the workers advertise less one
token (vLLM refuses a prompt that leaves no room for one output token).

When no tokenizer is reachable (no worker up and none configured, or the advertised path
exists only on the worker's machine and isn't a hub ID this one can fetch), the gateway does
not guess: the prompt passes here, and the engine, which counts exactly, refuses it if it
is too long: the job fails with "rejected by the engine", a 422 for a waited-on completion.
The same when no limit is known (no worker up and GENQ_MAX_PROMPT_TOKENS unset). What was
found is kept for `_INFO_TTL` seconds, missing or not, so an unreachable tokenizer costs one
attempt a minute, not one per request; a stale finding is used while one look in the
background refreshes it. Batch API lines are not counted here (one line's
error must not fail the batch): the engine refuses them line by line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from genq import names
from genq.schema import JobSpec
from genq.settings import GatewaySettings
from producers.gateway.errors import ApiError

__all__ = ["PromptTokens"]

log = logging.getLogger(__name__)

_INFO_TTL = 60.0
# Special tokens a tokenizer may add around a plain prompt (BOS, EOS, a prefix): a prompt
# whose UTF-8 bytes plus these fit the limit fits whatever the tokenizer (a byte-level or
# byte-fallback token covers at least one byte), so it needn't be counted.
_SPECIAL_TOKENS = 8


@dataclass(frozen=True, slots=True)
class _ModelInfo:
    tokenizer: Any | None
    context: int | None
    """The smallest max_model_len its workers advertise, if any is up."""
    at: float


class PromptTokens:
    def __init__(self, settings: GatewaySettings, redis: aioredis.Redis) -> None:
        self._settings = settings
        self._redis = redis
        self._models: dict[str, _ModelInfo] = {}
        self._tokenizers: dict[str, Any] = {}
        self._looking: dict[str, asyncio.Future[_ModelInfo]] = {}

    def preload(self) -> None:
        """Import transformers in the background now (seconds of CPU), rather than under the
        first burst of requests, which would all wait for it."""
        asyncio.get_running_loop().run_in_executor(None, _import_tokenizers)

    async def check(self, specs: Sequence[JobSpec], *, label: str = "jobs") -> None:
        """422 naming the limit if a job's prompt has more tokens than the model takes."""
        for i, spec in enumerate(specs):
            info = await self._info(spec.model)
            limit, why = self._limit(info)
            if limit is None or info.tokenizer is None:
                continue
            if spec.prompt is not None and len(spec.prompt.encode()) + _SPECIAL_TOKENS <= limit:
                continue
            count = await run_in_threadpool(_count, info.tokenizer, spec)
            if count is not None and count > limit:
                field = "prompt" if spec.prompt is not None else "messages"
                if len(specs) > 1:  # jobs[2].prompt; a completion's prompts: prompt[2]
                    field = f"{label}[{i}]" if label == field else f"{label}[{i}].{field}"
                raise ApiError(
                    422,
                    f"{field}: {count} tokens is over the limit of {limit} prompt tokens ({why})",
                    param=field,
                    code="context_length_exceeded",
                )

    def _limit(self, info: _ModelInfo) -> tuple[int | None, str]:
        configured = self._settings.max_prompt_tokens or None
        context = info.context - 1 if info.context else None
        if context is not None and (configured is None or context < configured):
            return context, (
                f"the model's context of {info.context} tokens, as its workers "
                "advertise it, less one for the output"
            )
        return configured, "GENQ_MAX_PROMPT_TOKENS"

    async def _info(self, model: str) -> _ModelInfo:
        info = self._models.get(model)
        if info is not None and time.monotonic() - info.at < _INFO_TTL:
            return info
        # One look per model at a time: a burst of requests for a model not yet known would
        # otherwise each scan the heartbeats and load the tokenizer (importing transformers
        # from many threads at once fails).
        task = self._looking.get(model)
        if task is None:
            task = asyncio.ensure_future(self._look(model))
            self._looking[model] = task
            task.add_done_callback(lambda _t: self._looking.pop(model, None))
            # A look that failed (Redis away) is retried by the next request that needs it.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if info is not None:
            # Stale: the requests go on with it while the look runs. The look scans the
            # keyspace for heartbeats, which takes a while in a big one, and every request
            # of that while would wait for it (seen as TTFT p99 of 4 s at 4 requests/s).
            return info
        return await asyncio.shield(task)

    async def _look(self, model: str) -> _ModelInfo:
        advertised, context = await self._advertised(model)
        source = self._settings.tokenizers.get(model) or advertised
        tokenizer = await self._tokenizer(source) if source else None
        info = _ModelInfo(tokenizer=tokenizer, context=context, at=time.monotonic())
        self._models[model] = info
        return info

    async def _advertised(self, model: str) -> tuple[str | None, int | None]:
        """The tokenizer and the smallest context the live workers of `model` advertise."""
        tokenizer, context = None, None
        # A large COUNT: the keyspace holds every job record, and each SCAN call is a round
        # trip; ten thousand keys a call crosses 100,000 keys in ten.
        async for key in self._redis.scan_iter(match=names.WORKER_STATS_PREFIX + "*", count=10_000):
            # The gateway's client decodes responses: fields and values are str.
            beat = cast("dict[str, str]", await self._redis.hgetall(key))
            if beat.get("model") != model:
                continue
            tokenizer = tokenizer or beat.get("tokenizer")
            if beat.get("max_model_len"):
                length = int(beat["max_model_len"])
                context = length if context is None else min(context, length)
        return tokenizer, context

    async def _tokenizer(self, source: str) -> Any | None:
        tokenizer = self._tokenizers.get(source)
        if tokenizer is None:  # not loaded yet, or not loadable last time (_info's TTL)
            tokenizer = await run_in_threadpool(_load, source)
            if tokenizer is not None:
                self._tokenizers[source] = tokenizer
        return tokenizer


def _import_tokenizers() -> None:
    try:
        from transformers import AutoTokenizer  # noqa: F401 - imported for its side effect
    except ImportError as exc:
        log.warning(
            "transformers is not importable (%s): prompt tokens are left to the engine to count",
            exc,
        )


def _load(source: str) -> Any | None:
    # Imported here, on first use: transformers takes seconds to import, and a gateway that
    # never sees a worker (or has GENQ_MAX_PROMPT_TOKENS off) should not pay for it.
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source)
    # Not on this machine, no hub access, not a tokenizer, or one this transformers can't
    # read: the engine counts the tokens instead, so no failure here may stop the gateway.
    except Exception as exc:  # noqa: BLE001
        log.warning(
            "tokenizer %r not loadable here (%s): prompt tokens are left to the engine to count",
            source,
            exc,
        )
        return None


def _count(tokenizer: Any, spec: JobSpec) -> int | None:
    """The prompt's tokens as the engine will count them, or None if the tokenizer can't
    render it (no chat template: the engine will say so)."""
    if spec.prompt is not None:
        return len(tokenizer(spec.prompt).input_ids)
    messages = [m.model_dump() for m in spec.messages or ()]
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    # A template that can't render these messages raises whatever jinja or it chooses; the
    # engine will render it again and say why.
    except Exception:  # noqa: BLE001
        return None
    if isinstance(ids, Mapping):  # newer transformers return an encoding
        ids = ids["input_ids"]
    return len(ids)
