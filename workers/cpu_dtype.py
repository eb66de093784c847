"""The model's dtype on an x86 CPU that has no bfloat16 arithmetic.

vLLM's `--dtype auto` takes the checkpoint's dtype, and on CPU it turns float32 into
bfloat16 as well. Only AVX512-BF16 and AMX multiply bfloat16 in hardware; on any other x86
CPU (AVX2 EPYCs and Xeons, AVX-512 without BF16) oneDNN refuses the bf16 matmul ("Failed
to create oneDNN linear, fallback to torch linear") and torch emulates it. Measured on a
2-core AVX2 EPYC, the bench model (27M parameters): 134 tok/s in bfloat16 and 491 tok/s in
float32 with 256 sequences; one 1-token request 113 ms and 50 ms. So "auto" means float32
there. A dtype asked for by name is always kept."""

from __future__ import annotations

import platform

__all__ = ["engine_dtype"]

_X86 = {"x86_64", "amd64", "i686", "i386"}


def engine_dtype(requested: str, *, device: str | None = None) -> str:
    """`requested` unless it is "auto" on an x86 CPU without bf16 arithmetic: "float32"."""
    if requested != "auto" or platform.machine().lower() not in _X86:
        return requested
    if device is None:
        from vllm.platforms import current_platform

        device = current_platform.device_type
    if device != "cpu":
        return requested
    import torch

    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return requested
    return "float32"
