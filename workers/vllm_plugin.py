"""A vLLM general plugin (entry point `vllm.general_plugins` in pyproject.toml): vLLM runs it
in each of its processes, the model process included, before any model runs.

On an x86 CPU with AMX, vLLM-CPU's attention kernel uses AMX tiles for bf16 models, and
Linux lets a process use them only after it has asked (arch_prctl ARCH_REQ_XCOMP_PERM).
vLLM's model process asks only by the way: oneDNN does when a matrix product is big
enough for its AMX path. A first forward pass of a few tokens (a short first prompt)
reaches the attention kernel before that, and the model process dies of SIGILL, taking
the engine and the worker with it (vLLM alone too, given a 4-token first prompt). Asking up
front removes the dependence on what runs first."""

from __future__ import annotations

__all__ = ["allow_amx"]


def allow_amx() -> None:
    import torch  # vLLM has imported it already

    if torch.cpu._is_amx_tile_supported():
        torch.cpu._init_amx()  # idempotent; False (nothing done) where the OS refuses
