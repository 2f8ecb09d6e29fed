"""evaluation/segmentation/nnunet_bridge.py: the segmenter's precision choice."""
from __future__ import annotations

import pytest
import torch

from evaluation.segmentation import nnunet_bridge as bridge


@pytest.mark.parametrize("has_bf16", [False, True])
def test_segmenter_precision(monkeypatch, has_bf16):
    # 'auto' is bf16 exactly on a CPU that computes it natively (AMX / AVX512-BF16), else fp32
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: has_bf16, raising=False)
    assert bridge.resolve_precision("fp32") == "fp32" and bridge.resolve_precision("bf16") == "bf16"
    assert bridge.resolve_precision("auto") == ("bf16" if has_bf16 else "fp32")
    assert bridge.resolve_precision("auto", "cuda") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        bridge.resolve_precision("fp16")
    with pytest.raises(ValueError, match="for CPUs"):
        bridge.resolve_precision("bf16", "cuda")
