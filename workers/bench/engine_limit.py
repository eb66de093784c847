"""The engine's own limit: vLLM's offline `LLM.generate` on every prompt at once.

Run as `python -m workers.bench.engine_limit --model DIR ...`; it loads the engine once,
warms it up, then answers JSON commands on stdin with JSON lines on stdout, so the bench
can alternate engine runs with fleet runs (A B A B) without reloading the model."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

from vllm import LLM, SamplingParams

from workers.cpu_dtype import engine_dtype


def _params(data: dict[str, Any]) -> SamplingParams:
    # As a genq worker runs a job without stop strings: no incremental detokenizing, the
    # text decoded once at the end (below). The engine's best, and the same work.
    return SamplingParams(**data, detokenize=False)


def serve(llm: LLM, out: TextIO) -> None:
    tokenizer = llm.get_tokenizer()
    for line in sys.stdin:
        command = json.loads(line)
        params = _params(command["params"])
        if command["op"] == "batch":
            start = time.perf_counter()
            cpu = time.process_time()
            outputs = llm.generate(command["prompts"], params, use_tqdm=False)
            texts = [
                tokenizer.decode(o.outputs[0].token_ids, skip_special_tokens=True) for o in outputs
            ]
            seconds = time.perf_counter() - start
            # This process's CPU (all its threads, not the engine core's processes): what
            # vLLM's frontend costs per request, the part of a genq worker's CPU that is
            # the engine's, not genq's.
            cpu = time.process_time() - cpu
            tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
            reply: dict[str, Any] = {
                "tokens": tokens,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "chars": sum(map(len, texts)),
            }
        elif command["op"] == "latency":
            latencies = []
            for prompt in command["prompts"]:
                time.sleep(command.get("idle", 0.0))  # each request finds the engine idle
                start = time.perf_counter()
                llm.generate([prompt], params, use_tqdm=False)
                latencies.append(time.perf_counter() - start)
            reply = {"latencies": latencies}
        else:
            reply = {"error": f"unknown op {command['op']!r}"}
        print(json.dumps(reply), file=out, flush=True)


def main() -> None:
    # vLLM and its engine processes log to stdout: keep the real stdout for replies and send
    # fd 1 (inherited by the engine processes) to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=1024)
    args = parser.parse_args()
    llm = LLM(
        model=args.model,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        enforce_eager=True,
        seed=0,
        dtype=engine_dtype("auto"),  # type: ignore[arg-type]  # as a genq worker picks it
    )
    llm.generate(["warm up"] * 8, SamplingParams(max_tokens=8), use_tqdm=False)
    dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
    print(json.dumps({"ready": True, "dtype": dtype}), file=out, flush=True)
    serve(llm, out)


if __name__ == "__main__":
    main()
