"""The fleet's commands of `genq`: worker, Flower, gateway, services, test model, demo,
bench and chaos (genq/cli.py holds the jobs' commands and the `app` they all join).

Heavy components are imported inside the commands that use them, as in genq/cli.py."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from genq.cli import EXIT_FAILED, EXIT_INVALID, app, die, guard, services_app
from genq.settings import ClientSettings, WorkerSettings


@app.command()
@guard
def chaos(
    model: str = typer.Option(..., "--model", "-m", help="Served model to hit."),
    scenario: str = typer.Option(
        ..., "--scenario", "-s", help="kill, engine, sigterm, poison or malformed."
    ),
    jobs: int = typer.Option(300, "--jobs", min=1, help="Jobs to submit."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1),
    poison_tokens: int = typer.Option(
        256,
        "--poison-tokens",
        min=1,
        help="max_tokens of the poison job (it must run a while to be caught running).",
    ),
    restart_cmd: str | None = typer.Option(
        None,
        "--restart-cmd",
        help="Run after each worker goes down (else a supervisor "
        'must restart it), e.g. "genq worker --model PATH ...".',
    ),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds for the whole run."),
) -> None:
    """Do real damage to a running fleet, wait, and print the audit line; exit 1 if a job
    was lost or answered twice."""
    from producers import Client
    from producers.chaos import run_chaos

    base = ClientSettings()
    # The model must be one the fleet serves; chaos does not need it in GENQ_MODELS.
    with Client(base, models=sorted({*base.models, model})) as client:
        line = run_chaos(
            client,
            model=model,
            scenario=scenario,
            jobs=jobs,
            max_tokens=max_tokens,
            poison_tokens=poison_tokens,
            restart_cmd=restart_cmd,
            timeout=timeout,
            say=typer.echo,
        )
    typer.echo(str(line))
    if line.lost or line.duplicated:
        raise typer.Exit(EXIT_FAILED)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guard
def worker(
    ctx: typer.Context,
    loglevel: str = typer.Option("INFO", "--loglevel"),
    hostname: str | None = typer.Option(None, "--hostname", "-n"),
    cpus: str | None = typer.Option(
        None,
        "--cpus",
        help="CPU-only hosts: cores for the worker and its engine, e.g. 0-3 or 1. "
        "Workers sharing a host need disjoint sets, or their engines take turns on one core.",
    ),
) -> None:
    """Run a worker: `genq worker --model PATH` and vLLM engine options, by their vLLM names."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if cpus:
        from genq.cpus import pin_process

        # vLLM's CPU backend binds its OpenMP threads to these; its default ("auto") picks
        # the same cores for every engine on the host.
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpus
        # The whole worker too (its engine processes inherit it): with only the OpenMP
        # threads bound, the engine's other processes and the worker's own land where the
        # kernel puts them, and an engine whose core they crowd crawled (two workers on two
        # cores: one ran 79 jobs, the other 1).
        pin_process(cpus)
    from workers.app import run_worker
    from workers.engine import parse_engine_args

    engine_args = parse_engine_args(list(ctx.args))
    served = engine_args.served_model_name
    served_model = (served[0] if isinstance(served, list) else served) or engine_args.model
    settings = WorkerSettings()
    run_worker(
        settings,
        engine_args=engine_args,
        served_model=served_model,
        loglevel=loglevel,
        hostname=hostname,
    )


@app.command()
def flower(
    port: int = typer.Option(5555, "--port"),
    address: str = typer.Option("127.0.0.1", "--address"),
    basic_auth: str | None = typer.Option(None, "--basic-auth", help="user:password"),
) -> None:
    """Run Flower, the Celery dashboard, on the fleet's broker."""
    s = ClientSettings()
    args = [
        sys.executable,
        "-m",
        "celery",
        f"--broker={s.broker_url}",
        f"--result-backend={s.redis_url}",
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]
    if basic_auth:
        args.append(f"--basic-auth={basic_auth}")
    elif address in ("127.0.0.1", "localhost", "::1"):
        # Flower's HTTP API refuses anonymous calls unless told; on loopback only this
        # machine can call it, which is what a local fleet wants.
        os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
    else:
        die("flower: --basic-auth user:password is required off loopback", EXIT_INVALID)
    os.execv(sys.executable, args)


@app.command("make-test-model")
def make_test_model(
    directory: Path = typer.Argument(..., help="Where to write the model."),
    size: str = typer.Option("tiny", "--size", help="tiny (tests) or bench (~27M params)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build a small random Llama model with a byte-level BPE tokenizer (no hub needed)."""
    from genq.testmodel import SIZES, build_test_model

    if size not in SIZES:
        die(f"size: {size!r} is not one of {', '.join(SIZES)}", EXIT_INVALID)
    typer.echo(build_test_model(directory, size=size, seed=seed))


def _exit_cleanly_on_signals() -> None:
    """SIGTERM and SIGHUP as SystemExit: the bench's `finally` clauses then stop the engine
    and worker processes it started (each in a session of its own, so the signal that
    stops the bench does not reach them); by default the bench would die and leave them
    running, each holding an engine and the cores."""

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Tiny model, 64 requests, 1 repeat."),
    repeat: int | None = typer.Option(None, "--repeat", help="Runs per figure (median)."),
    requests: int | None = typer.Option(None, "--requests"),
    max_tokens: int | None = typer.Option(None, "--max-tokens"),
    json_path: Path | None = typer.Option(None, "--json", help="Write results as JSON."),
    model: Path | None = typer.Option(None, "--model", help="Model dir."),
    cache: bool = typer.Option(False, "--cache", help="Result-cache hit rate on repeats."),
    priority: bool = typer.Option(
        False, "--priority", help="Overload burst: per-level waits, overtakings."
    ),
    seconds: float = typer.Option(20.0, "--seconds", help="--priority: burst length."),
    load: float = typer.Option(3.0, "--load", help="--priority: burst rate / capacity."),
    serve: bool = typer.Option(
        False,
        "--serve",
        help=("`vllm bench serve` against genq gateway + worker, then vLLM's OpenAI server."),
    ),
    rate: float = typer.Option(
        float("inf"), "--rate", help="--serve: requests/s (inf: all at once)."
    ),
    prompts: int | None = typer.Option(
        None, "--prompts", min=1, help="--serve: prompts per run (512)."
    ),
) -> None:
    """Fleet vs the engine's own limit vs naive Celery, side by side in one run."""
    _exit_cleanly_on_signals()
    from genq.testmodel import build_test_model
    from producers.bench import Workload, run_bench

    size = "tiny" if quick else "bench"
    path = model or build_test_model(Path(f".genq/models/{size}"), size=size)
    if serve:
        _bench_serve(
            path,
            quick=quick,
            repeat=repeat,
            prompts=prompts or requests,
            max_tokens=max_tokens,
            rate=rate,
            json_path=json_path,
        )
        return
    defaults: dict[str, Any] = (
        dict(
            requests=64,
            max_tokens=32,
            max_num_seqs=64,
            naive_requests=32,
            repeat=1,
            max_model_len=512,
        )
        if quick
        else {}
    )
    overrides = {
        k: v
        for k, v in dict(requests=requests, max_tokens=max_tokens, repeat=repeat).items()
        if v is not None
    }
    if priority:
        # Short jobs and a small batch: capacity is reached, and overload built, in seconds.
        defaults = {
            **defaults,
            "max_num_seqs": 8 if quick else 32,
            "max_tokens": 16 if quick else 32,
        }
    workload = Workload(model_path=path, **{**defaults, **overrides})
    if priority:
        from producers.bench.priority import run_priority_bench

        result = run_priority_bench(workload, seconds=seconds, load=load)
        if json_path is not None:
            json_path.write_text(json.dumps(result, indent=2))
        return
    if cache:
        from producers.bench.cache import run_cache_bench

        result = run_cache_bench(workload)
        if json_path is not None:
            json_path.write_text(json.dumps(result, indent=2))
        return
    run_bench(workload, json_path=json_path)


def _bench_serve(
    path: Path,
    *,
    quick: bool,
    repeat: int | None,
    prompts: int | None,
    max_tokens: int | None,
    rate: float,
    json_path: Path | None,
) -> None:
    from producers.bench.serve import ServeWorkload, run_serve_bench
    from workers.cpu_dtype import engine_dtype

    defaults: dict[str, Any] = (
        {"prompts": 64, "output_len": 32, "repeat": 1, "long_polls": 200, "burst": 64}
        if quick
        else {}
    )
    overrides = {
        k: v
        for k, v in {"prompts": prompts, "output_len": max_tokens, "repeat": repeat}.items()
        if v is not None
    }
    # Resolved here, once, as a genq worker resolves "auto", and given to both servers by
    # name: the same engine behind each (vLLM's server alone would take bfloat16 on an x86
    # CPU that only emulates it).
    workload = ServeWorkload(
        model_path=path, rate=rate, dtype=engine_dtype("auto"), **{**defaults, **overrides}
    )
    run_serve_bench(workload, json_path=json_path, say=typer.echo)


@app.command()
def demo(
    jobs: int = typer.Option(100, "--jobs"),
    flower_port: int = typer.Option(5555, "--flower-port"),
    model: Path | None = typer.Option(None, "--model", help="Model dir (default: tiny)."),
) -> None:
    """Start a worker and Flower, run ~100 mixed-priority jobs, show results, stop."""
    from genq.testmodel import build_test_model
    from producers.demo import run_demo

    path = model or build_test_model(Path(".genq/models/tiny"), size="tiny")
    run_demo(model_path=path, jobs=jobs, flower_port=flower_port)


@services_app.command("check")
def services_check() -> None:
    """Report whether RabbitMQ and Redis answer."""
    from genq import services

    s = ClientSettings()
    statuses = services.check(s)
    _report(statuses)


@services_app.command("start")
def services_start() -> None:
    """Start local RabbitMQ and Redis if they are installed and not running."""
    from genq import services

    s = ClientSettings()
    _report(services.start(s))


def _report(statuses: list[Any]) -> None:
    for st in statuses:
        typer.echo(f"{st.name:<9} {'ok' if st.ok else 'DOWN':<5} {st.url}  {st.detail}")
    if not all(st.ok for st in statuses):
        raise typer.Exit(EXIT_FAILED)


# -- HTTP gateway ------------------------------------------------------------------------


@app.command()
def gateway(
    host: str | None = typer.Option(
        None, "--host", help="Bind address (GENQ_GATEWAY_HOST, 127.0.0.1)."
    ),
    port: int | None = typer.Option(None, "--port", help="Port (GENQ_GATEWAY_PORT, 8000)."),
    api_keys: str | None = typer.Option(
        None, "--api-keys", help=("on, off, or auto: on unless bound to loopback (GENQ_API_KEYS).")
    ),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Run the HTTP gateway: REST jobs API, OpenAI-compatible API, Batch API."""
    from producers.gateway.cli import serve

    serve(host, port, api_keys=api_keys, log_level=log_level)
