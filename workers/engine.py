"""The engine bridge: the one module that imports vLLM.

One `AsyncLLM` per worker process, fed many jobs at once; vLLM's continuous batching does
the rest. vLLM's errors are translated into genq's so the consumer can tell a job that can't
run (fail it, don't retry) from a job that hit a passing error (retry) from an engine that is
gone (stop the worker)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from vllm import SamplingParams, TextPrompt
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMClientError
from vllm.renderers import ChatParams
from vllm.sampling_params import RequestOutputKind
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError
from vllm.v1.engine.exceptions import EngineGenerateError

from genq.errors import EngineDeadError, EngineError, RequestRejectedError
from genq.schema import JobSpec
from workers.cpu_dtype import engine_dtype
from workers.engine_stats import EngineCounters, count_steps

__all__ = ["Engine", "Generation", "parse_engine_args"]

log = logging.getLogger(__name__)

# Prompts up to this long (~1,000 tokens: well under a millisecond) are tokenized on the
# event loop's thread; longer ones on vLLM's tokenizer thread (see Engine.render_soon).
_INLINE_RENDER_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def parse_engine_args(argv: list[str]) -> AsyncEngineArgs:
    """vLLM's own engine options, under their vLLM names (`--max-num-seqs 64`, ...)."""
    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="genq worker"))  # type: ignore[no-untyped-call]
    try:
        namespace = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed what is wrong
        raise argparse.ArgumentError(None, f"invalid engine options: {argv}") from exc
    args: AsyncEngineArgs = AsyncEngineArgs.from_cli_args(namespace)
    return args


class Engine:
    def __init__(self, llm: AsyncLLM, args: AsyncEngineArgs, counters: EngineCounters) -> None:
        self._llm = llm
        self.counters = counters
        self.max_num_seqs: int = llm.vllm_config.scheduler_config.max_num_seqs
        self.max_model_len: int = llm.vllm_config.model_config.max_model_len
        self.model: str = args.model
        self.tokenizer: str = args.tokenizer or args.model

    @classmethod
    def start(cls, args: AsyncEngineArgs) -> Engine:
        # On CPU vLLM sizes its KV cache from this (GiB); without it start-up fails.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        # Without vLLM's per-step statistics (and no stat logger, which would turn them back
        # on): the worker counts what it reports itself, for less (workers/engine_stats.py).
        args.disable_log_stats = True
        dtype = engine_dtype(args.dtype)
        if dtype != args.dtype:
            log.info(
                "dtype %s: %s, as this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX)",
                args.dtype,
                dtype,
            )
            args.dtype = dtype  # type: ignore[assignment]  # one of vLLM's names
        llm = AsyncLLM.from_engine_args(args)
        counters = EngineCounters()
        count_steps(llm, counters)
        return cls(llm, args, counters)

    def render_soon(self, spec: JobSpec) -> asyncio.Future[Any]:
        """`render`, begun for a job about to wait (for a slot, for its admission's round
        trip to Redis), so that its prompt is tokenized before it enters the engine, not on
        the way in.

        A short prompt on this (the event loop's) thread, after what is already scheduled:
        a fraction of a millisecond, less than the hop to vLLM's tokenizer thread and back,
        whose work also held the GIL while the loop waited to read the admission's reply
        (one job at a time, measured: ~1 ms more to start); scheduled after the wake-up of
        the admission loop, it runs while the ADMIT is on its way. A long prompt on vLLM's
        tokenizer thread, so the loop never stalls feeding the engine. A prompt that can't
        be rendered raises RequestRejectedError where the future is awaited, if it is."""
        loop = asyncio.get_running_loop()
        if spec.prompt_chars() > _INLINE_RENDER_CHARS:
            rendered: asyncio.Future[Any] = asyncio.ensure_future(self.render(spec))
        else:
            rendered = loop.create_future()
            loop.call_soon(self._render_into, spec, rendered)
        # A job that leaves without running never awaits it: its failure is not asyncio's
        # to log ("exception was never retrieved").
        rendered.add_done_callback(_mark_retrieved)
        return rendered

    def _render_into(self, spec: JobSpec, rendered: asyncio.Future[Any]) -> None:
        renderer = self._llm.renderer
        try:
            with _unrenderable_rejected():
                if spec.prompt is not None:
                    (prompt,) = renderer.render_cmpl([_text(spec.prompt)])
                else:
                    _, (prompt,) = renderer.render_chat([_messages(spec)], ChatParams())
        except RequestRejectedError as exc:
            rendered.set_exception(exc)
        else:
            rendered.set_result(prompt)

    async def render(self, spec: JobSpec) -> Any:
        """Tokenize through vLLM's renderer, on its tokenizer thread: the prompt verbatim,
        or chat messages through the model's chat template (without the second BOS a
        template that writes one would get from plain tokenizing). It also checks the
        length against the context."""
        renderer = self._llm.renderer
        with _unrenderable_rejected():
            if spec.prompt is not None:
                (rendered,) = await renderer.render_cmpl_async([_text(spec.prompt)])
            else:
                _, (rendered,) = await renderer.render_chat_async([_messages(spec)], ChatParams())
        return rendered

    async def generate(
        self,
        request_id: str,
        spec: JobSpec,
        on_delta: Callable[[str], None] | None = None,
        *,
        prompt: Awaitable[Any] | None = None,
    ) -> Generation:
        """Run one job, its prompt rendered here or by `prompt` (a `render` begun earlier).
        With `on_delta` (a streaming job) the text is decoded as it is generated and each
        new piece handed to it; the pieces add up to the result's text. Without, the engine
        returns only the final output and the text is decoded once at the end: the cheap
        path most jobs take."""
        rendered = await (prompt if prompt is not None else self.render(spec))
        final = None
        pieces: list[str] = []
        token_count = 0
        with _translated_errors():  # SamplingParams refuses bad values with ValueError too
            if on_delta is None:
                params = _sampling(
                    spec,
                    # Incremental detokenizing costs the worker's process CPU at every step
                    # of every job; without stop strings nothing needs the text before the
                    # end, so it is decoded once, below.
                    detokenize=bool(spec.stop),
                    # Only the final output: no per-token objects built and thrown away.
                    output_kind=RequestOutputKind.FINAL_ONLY,
                )
            else:
                # Each output holds only what is new since the last: the piece to relay.
                params = _sampling(spec, detokenize=True, output_kind=RequestOutputKind.DELTA)
            async for output in self._llm.generate(rendered, params, request_id):
                final = output
                if on_delta is not None and output.outputs:
                    delta = output.outputs[0]
                    token_count += len(delta.token_ids)
                    if delta.text:
                        pieces.append(delta.text)
                        on_delta(delta.text)
        if self._llm.errored:
            raise EngineDeadError("the engine stopped while the request ran")
        if final is None or not final.outputs:
            raise EngineError("the engine returned no output")
        completion = final.outputs[0]
        if completion.finish_reason == "abort":  # vLLM aborted it (shutting down): not a result
            raise EngineError("the engine aborted the request")
        if on_delta is not None:
            # The streamed pieces are the text: the stored result must equal what the
            # client was sent.
            text, completion_tokens = "".join(pieces), token_count
        else:
            text = (
                completion.text
                if spec.stop
                else self._llm.get_tokenizer().decode(
                    completion.token_ids, skip_special_tokens=True
                )
            )
            completion_tokens = len(completion.token_ids)
        prompt_tokens = len(final.prompt_token_ids or ())
        self.counters.finished(prompt_tokens, final.num_cached_tokens)
        return Generation(
            text=text,
            finish_reason=completion.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    @property
    def dead(self) -> bool:
        return bool(self._llm.errored)

    def core_pids(self) -> list[int]:
        """PIDs of the engine core processes (children of this worker). Published in the
        worker's heartbeat so an operator, or `genq chaos`, can find the engine itself."""
        manager = getattr(getattr(self._llm.engine_core, "resources", None), "engine_manager", None)
        return [p.pid for p in getattr(manager, "processes", ()) if p.pid is not None]

    def shutdown(self) -> None:
        self._llm.shutdown()

    def describe(self) -> dict[str, Any]:
        """What the worker advertises in its heartbeat: the gateway finds the tokenizer to
        count prompt tokens with, and the context they must fit in, here."""
        return {
            "model_path": self.model,
            "tokenizer": self.tokenizer,
            "max_num_seqs": self.max_num_seqs,
            "max_model_len": self.max_model_len,
        }


def _sampling(spec: JobSpec, **kwargs: Any) -> SamplingParams:
    return SamplingParams(
        max_tokens=spec.max_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        stop=list(spec.stop) or None,
        seed=spec.seed,
        ignore_eos=spec.ignore_eos,
        **kwargs,
    )


def _mark_retrieved(rendered: asyncio.Future[Any]) -> None:
    if not rendered.cancelled():
        rendered.exception()


def _text(prompt: str) -> TextPrompt:
    # vLLM's TypedDict lists its optional keys as required to type checkers.
    return cast(TextPrompt, {"prompt": prompt})


def _messages(spec: JobSpec) -> list[Any]:
    """Chat messages as vLLM's renderer takes them (OpenAI's message dicts)."""
    return [m.model_dump() for m in spec.messages or ()]


@contextmanager
def _unrenderable_rejected() -> Iterator[None]:
    try:
        yield
    except VLLMClientError as exc:  # e.g. the prompt is longer than the context
        raise RequestRejectedError(str(exc)) from exc
    except Exception as exc:  # a model without a chat template, a bad role order
        raise RequestRejectedError(f"prompt could not be rendered: {exc}") from exc


@contextmanager
def _translated_errors() -> Iterator[None]:
    """vLLM's errors as genq's: can't run (rejected), passing (retry), engine gone (stop)."""
    try:
        yield
    except VllmEngineDeadError as exc:
        raise EngineDeadError(str(exc)) from exc
    except (VLLMClientError, ValueError) as exc:  # the request itself is invalid
        raise RequestRejectedError(str(exc)) from exc
    except EngineGenerateError as exc:
        raise EngineError(repr(exc.__cause__ or exc)) from exc
