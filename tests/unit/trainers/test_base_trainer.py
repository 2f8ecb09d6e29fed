"""trainers/base_trainer.py: device choice and precision (no training)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainers.base_trainer import select_device


def test_cuda_without_gpu_is_a_clear_error(monkeypatch) -> None:
    # runs on every machine: PyTorch is told that it sees no GPU (was skipped wherever one was present)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(EnvironmentError, match="no CUDA GPU"):
        select_device("cuda")


@pytest.mark.parametrize("has_bf16", [False, True])
def test_auto_precision_follows_native_bf16_on_the_cpu(monkeypatch, has_bf16):
    """'auto' autocasts to bf16 only on a CPU that computes it natively (AMX / AVX512-BF16), else stays fp32."""
    from trainers.base_trainer import BaseTrainer, native_bf16

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: has_bf16, raising=False)
    cpu = SimpleNamespace(device=torch.device("cpu"))
    assert native_bf16(cpu.device) is has_bf16
    assert BaseTrainer._choose_precision(cpu, "auto") == ("bf16" if has_bf16 else "fp32")
    assert BaseTrainer._choose_precision(cpu, "fp32") == "fp32"
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        BaseTrainer._choose_precision(cpu, "fp16")
