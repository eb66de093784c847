"""`genq chaos` against a real worker: it submits the jobs, does the damage, waits, and prints
the audit line; its exit status says whether anything was lost or answered twice."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from genq.local import WorkerProcess, wait_for
from producers import Client
from producers.queues import purge_model
from tests.integration.conftest import REPO

EXIT_ENGINE_DEAD = 70  # workers/app.py


def genq_chaos(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genq.cli", "chaos", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_chaos_malformed_dead_letters_them_and_loses_nothing(
    worker: WorkerProcess, fleet_env: dict[str, str], model_name: str
) -> None:
    done = genq_chaos(
        "--scenario",
        "malformed",
        "--model",
        model_name,
        "--jobs",
        "300",
        "--max-tokens",
        "4",
        env=fleet_env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert "published 4 malformed messages" in done.stdout
    # The one malformed message whose job had a record failed it; the 300 jobs succeeded.
    assert lines[-1] == "accepted=301 succeeded=300 failed=1(malformed) lost=0 duplicated=0"
    assert worker.proc is not None and worker.proc.poll() is None, "the worker died of it"


def test_chaos_refuses_a_scenario_it_does_not_know(
    fleet_env: dict[str, str], model_name: str
) -> None:
    done = genq_chaos("--scenario", "meteor", "--model", model_name, env=fleet_env)
    assert done.returncode == 1
    assert (
        "scenario: 'meteor' is not one of kill, engine, sigterm, poison, malformed" in done.stderr
    )
    assert "Traceback" not in done.stderr


def test_chaos_engine_kills_an_engine_and_restarts_the_worker(
    make_worker: Any, fleet_env: dict[str, str], tiny_model: Path, log_dir: Path
) -> None:
    model = f"chaos-{uuid.uuid4().hex[:6]}"
    env = {**fleet_env, "GENQ_MODELS": model, "GENQ_LEASE_SECONDS": "3"}
    victim = make_worker(model_name=model, max_num_seqs=8, env=env, name="chaos-victim")
    # What --restart-cmd runs: a worker the test can find afterwards by its name.
    spare = WorkerProcess(
        model_path=tiny_model,
        model_name=model,
        env=env,
        log_dir=log_dir,
        max_num_seqs=8,
        name="chaos-spare",
    )
    client = Client(models=[model])
    try:
        done = genq_chaos(
            "--scenario",
            "engine",
            "--model",
            model,
            "--jobs",
            "300",
            "--max-tokens",
            "16",
            "--restart-cmd",
            shlex.join(spare.args),
            env=env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert victim.proc is not None and victim.proc.wait(60) == EXIT_ENGINE_DEAD
        lines = done.stdout.strip().splitlines()
        assert any("killed the engine core" in line for line in lines)
        assert any("restarted a worker" in line for line in lines)
        assert lines[-1] == "accepted=300 succeeded=300 failed=0 lost=0 duplicated=0"
    finally:
        # The restarted worker belongs to no fixture: stop it (and its engine) by its name.
        for pid in pids_mentioning(spare.hostname):
            os.kill(pid, signal.SIGTERM)
        wait_for(
            lambda: not pids_mentioning(spare.hostname),
            timeout=120,
            what="the restarted worker to stop",
        )
        purge_model(client.settings, model, delete=True)
        client.close()


def pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found
