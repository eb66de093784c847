"""`genq bench --serve --quick`: vLLM's load generator against genq (gateway + worker) and
vLLM's own server, for real, and every figure written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

FIGURES = ("output_throughput", "median_ttft_ms", "p99_ttft_ms", "completed", "failed")


def test_bench_serve_quick_completes_every_request_on_both_sides(
    services_up: None, tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "serve.json"
    done = subprocess.run(
        [sys.executable, "-m", "genq.cli", "bench", "--serve", "--quick", "--json", str(out)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    workload = result["workload"]
    assert (workload["prompts"], workload["output_len"], workload["rate"]) == (64, 32, "inf")
    assert len(result["pairs"]) == 1
    for side in ("genq", "vllm"):
        for figure in FIGURES:
            assert figure in result[side], (side, figure)
        figures = result["pairs"][0][side]
        assert figures["failed"] == 0, (side, figures["errors"])
        assert figures["completed"] == 64, side
        # --ignore-eos: every token asked for came back, streamed.
        assert figures["total_output_tokens"] == 64 * 32, side
        assert figures["output_throughput"] > 0
        assert 0 < figures["median_ttft_ms"] <= figures["p99_ttft_ms"]
    # Every long poll through the gateway answered 200 with its job ended.
    polls = result["long_polls"]
    assert (polls["long_polls"], polls["ended"], polls["failed"]) == (200, 200, 0), polls
    assert result["burst"]["accepted"] == 64 and result["burst"]["seconds"] > 0
    assert result["genq_over_vllm"] == pytest.approx(
        result["genq"]["output_throughput"] / result["vllm"]["output_throughput"]
    )
    assert "genq / vLLM output throughput" in done.stdout
