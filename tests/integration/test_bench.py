"""`genq bench --quick` runs every contender for real and writes every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import REPO

FIELDS = ("engine_tokens_per_s", "fleet_tokens_per_s", "naive_tokens_per_s",
          "fleet_over_engine", "fleet_over_naive", "occupancy", "workload")


def test_bench_quick_writes_every_field_with_sane_values(
    services_up: None, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "genq.cli", "bench", "--quick",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    for field in FIELDS:
        assert field in result, field
    for rate in ("engine_tokens_per_s", "fleet_tokens_per_s", "naive_tokens_per_s"):
        assert result[rate] > 0
    assert 0 < result["fleet_over_engine"] < 5
    assert 0 < result["occupancy"] <= 1
    assert result["workload"]["requests"] == 64
    pair = result["pairs"][0]
    # Every token asked for was produced, by both.
    expected = 64 * result["workload"]["max_tokens"]
    assert pair["engine"]["tokens"] == pair["fleet"]["tokens"] == expected
    assert pair["fleet"]["failed"] == 0
    assert "fleet / engine" in done.stdout


def test_bench_priority_quick_favours_the_top_level_under_overload(
    services_up: None, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "priority.json"
    done = subprocess.run([sys.executable, "-m", "genq.cli", "bench", "--priority", "--quick",
                           "--seconds", "6", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
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
