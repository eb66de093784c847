"""`genq bench --quick` runs every contender for real and writes every figure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from genq.local import wait_for
from tests.integration.conftest import REPO

FIELDS = (
    "engine_tokens_per_s",
    "fleet_tokens_per_s",
    "naive_tokens_per_s",
    "fleet_over_engine",
    "fleet_over_naive",
    "occupancy",
    "workload",
)


def test_bench_quick_writes_every_field_with_sane_values(
    services_up: None, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "genq.cli", "bench", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    for field in FIELDS:
        assert field in result, field
    for rate in ("engine_tokens_per_s", "fleet_tokens_per_s", "naive_tokens_per_s"):
        assert result[rate] > 0
    assert 0 < result["fleet_over_engine"] < 5
    assert 0 < result["occupancy"] <= 1
    assert result["workload"]["requests"] == 64
    assert result["dtype"] in ("bfloat16", "float16", "float32")
    pair = result["pairs"][0]
    # Every token asked for was produced, by both.
    expected = 64 * result["workload"]["max_tokens"]
    assert pair["engine"]["tokens"] == pair["fleet"]["tokens"] == expected
    assert pair["fleet"]["failed"] == 0
    submission = result["submission"]
    assert len(submission["submit_runs"]) == result["workload"]["repeat"] == 1
    assert submission["submit_jobs_per_s"] == submission["submit_runs"][0] > 0
    assert "fleet / engine" in done.stdout


def test_bench_priority_quick_favours_the_top_level_under_overload(
    services_up: None, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "priority.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "genq.cli",
            "bench",
            "--priority",
            "--quick",
            "--seconds",
            "6",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["failed"] == 0 and result["jobs"] > 0
    levels = result["per_level"]
    assert sorted(int(k) for k in levels) == list(range(result["levels"]))
    assert all(row["jobs"] > 0 for row in levels.values())
    # Overloaded 3x, the top level is served ahead of the bottom one.
    top, bottom = levels[str(result["levels"] - 1)], levels["0"]
    assert top["wait_p50_s"] < bottom["wait_p50_s"]
    assert isinstance(result["overtakings_past_bound"], int)
    assert "overtakings past the bound" in done.stdout


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has stopped; reaping it is its new parent's business


def test_a_stopped_bench_leaves_no_engine_running(
    services_up: None, tiny_model: Path, tmp_path: Path
) -> None:
    """SIGTERM mid-run (a CI timeout, `kill`): the engine-limit process, the worker and
    their engine processes are stopped with the bench, not left holding the cores."""
    bench = subprocess.Popen(
        [sys.executable, "-m", "genq.cli", "bench", "--quick"],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert bench.stdout is not None
        for line in bench.stdout:  # both contenders are up once the first pair has run
            if line.startswith("pair 1/"):
                break
        else:
            raise AssertionError(f"the bench ended before its first pair: {bench.wait()}")
        started = _descendants(bench.pid)
        assert len(started) >= 4, started  # engine limit and worker, each with an engine
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=300) == 128 + signal.SIGTERM
        wait_for(
            lambda: not any(_alive(pid) for pid in started),
            timeout=60,
            what="the bench's processes to stop",
        )
    finally:
        if bench.poll() is None:
            bench.kill()
