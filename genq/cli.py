"""The `genq` command: the top floor, the one place that imports every component.

Heavy components are imported inside the commands that use them: `genq status` must not pay
for importing torch and vLLM (seconds), and a client machine may not have them at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import typer

from genq.errors import GenqError, NotFoundError, ValidationError
from genq.schema import JobRecord
from genq.settings import ClientSettings, WorkerSettings
from scheduler import starvation_bound

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="genq: a fleet for LLM generation jobs."
)
services_app = typer.Typer(no_args_is_help=True, help="Local RabbitMQ and Redis.")
app.add_typer(services_app, name="services")

EXIT_FAILED = 1
EXIT_INVALID = 2


def die(message: str, code: int) -> NoReturn:
    typer.echo(f"genq: {message}", err=True)
    raise typer.Exit(code)


def _client() -> Any:
    from producers import Client

    return Client()


def _print_record(record: JobRecord) -> None:
    typer.echo(record.model_dump_json(exclude_none=True))


def guard(fn: Any) -> Any:
    """Map genq's errors to one clear line and an exit code, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:
            die(str(exc), EXIT_INVALID)
        except NotFoundError as exc:
            die(str(exc), EXIT_FAILED)
        except GenqError as exc:
            die(f"{type(exc).__name__}: {exc}", EXIT_FAILED)

    return wrapper


# -- clients ------------------------------------------------------------------------------


@app.command()
@guard
def submit(
    prompt: str = typer.Argument(..., help="The prompt, verbatim."),
    model: str = typer.Option(..., "--model", "-m"),
    priority: int = typer.Option(0, "--priority", "-p", help="Level; higher is more urgent."),
    max_tokens: int | None = typer.Option(None, "--max-tokens"),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    seed: int | None = typer.Option(None, "--seed"),
    stop: list[str] = typer.Option([], "--stop"),
    ignore_eos: bool = typer.Option(False, "--ignore-eos"),
    deadline: float | None = typer.Option(
        None, "--deadline", help="Seconds from now, or a Unix time."
    ),
    idempotency_key: str | None = typer.Option(None, "--idempotency-key"),
    tenant: str | None = typer.Option(None, "--tenant"),
    wait: bool = typer.Option(False, "--wait", help="Wait and print the finished record."),
) -> None:
    """Submit one job; prints its task ID."""
    fields = dict(
        model=model,
        priority=priority,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=stop,
        ignore_eos=ignore_eos,
        deadline=deadline,
        idempotency_key=idempotency_key,
        tenant=tenant,
    )
    with _client() as client:
        job_id = client.submit(prompt, **{k: v for k, v in fields.items() if v is not None})
        if wait:
            _print_record(client.result(job_id))
        else:
            typer.echo(job_id)


@app.command()
@guard
def status(job_id: str) -> None:
    """Print a job's record (JSON); a queued job also gets its queue position estimate."""
    with _client() as client:
        record = client.status(job_id)
        _print_record(record)
        if record.state.value == "queued":
            typer.echo(json.dumps({"queue": client.queue_estimate(record)}))


@app.command()
@guard
def result(
    job_id: str,
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds to wait."),
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """Wait for a job to end and print its record (JSON)."""
    with _client() as client:
        _print_record(client.result(job_id, wait=not no_wait, timeout=timeout))


@app.command()
@guard
def cancel(job_id: str) -> None:
    """Cancel a job: queued ones never run, running ones are aborted."""
    with _client() as client:
        typer.echo(client.cancel(job_id))


@app.command()
@guard
def batch(
    # `input` shadows the builtin: typer names the command's argument after it (INPUT).
    input: Path = typer.Argument(  # noqa: A002
        ..., exists=True, dir_okay=False, help="JSONL of requests."
    ),
    output: Path = typer.Option(Path("-"), "--output", "-o", help="JSONL of results."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model for lines that name none."),
    timeout: float | None = typer.Option(None, "--timeout"),
) -> None:
    """Submit every line of a JSONL file, wait, write one result line per request."""
    from producers.batch import run_batch

    with _client() as client:
        run_batch(client, input, output, default_model=model, timeout=timeout)


dead_app = typer.Typer(no_args_is_help=True, help="A model's dead-letter queue.")
app.add_typer(dead_app, name="dead")


@dead_app.command("list")
@guard
def dead_list(model: str = typer.Option(..., "--model", "-m")) -> None:
    """Jobs in the model's dead-letter queue, with why they are there."""
    from producers.dead import list_dead

    with _client() as client:
        for letter in list_dead(client, model):
            typer.echo(
                json.dumps(
                    {"id": letter.job_id, "reason": letter.reason, "attempts": letter.attempts}
                )
            )


@dead_app.command("requeue")
@guard
def dead_requeue(job_id: str, model: str = typer.Option(..., "--model", "-m")) -> None:
    """Give a dead-lettered job another go at its original level and enqueue time."""
    from producers.dead import requeue_dead

    with _client() as client:
        requeue_dead(client, model, job_id)
        typer.echo("queued")


@app.command()
def config() -> None:
    """Print the scheduling settings and the starvation bound they imply."""
    s = WorkerSettings()
    typer.echo(f"alpha            {s.alpha:g} per level")
    typer.echo(f"beta             {s.beta:g} per second waited")
    typer.echo(f"levels           {s.levels} (0..{s.levels - 1}, higher is more urgent)")
    typer.echo(f"window           {s.window} held jobs per level per worker")
    typer.echo(f"policy           {s.policy}")
    if s.policy == "fair":
        c = ClientSettings()
        typer.echo(
            f"fair band        {s.fair_levels:g} levels (the bound widens by "
            f"{s.fair_levels * s.alpha / s.beta:g} s)"
        )
        typer.echo(
            f"tenant turns     top turn under {c.fair_quantum:g} tokens of demand, one "
            f"lower per doubling; demand decays over {c.fair_horizon:g} s"
        )
    one, whole = (starvation_bound(n, alpha=s.alpha, beta=s.beta) for n in (1, s.levels - 1))
    typer.echo(
        f"starvation bound {one:g} s per level apart ((alpha/beta)*dp); bottom vs top: {whole:g} s"
    )
    typer.echo(f"models           {', '.join(s.models) or '(none declared: set GENQ_MODELS)'}")


# -- fleet --------------------------------------------------------------------------------


from genq import cli_fleet  # noqa: E402, F401 - registers the fleet's commands on `app`
from producers.gateway.cli import keys_app  # noqa: E402 - the gateway's sub-app, added last

app.add_typer(keys_app, name="keys")


def main() -> None:
    app()


if __name__ == "__main__":
    # `python -m genq.cli`: this file runs as __main__, and the fleet's commands registered
    # themselves on genq.cli's `app`, a second copy; run that one.
    from genq.cli import main as registered_main

    registered_main()
