"""evaluation/segmentation/nnunet_bridge.py: the segmenter's precision choice."""
from __future__ import annotations

import pytest

from evaluation.segmentation import nnunet_bridge as bridge


def test_segmenter_precision():
    assert bridge.resolve_precision("fp32") == "fp32" and bridge.resolve_precision("bf16") == "bf16"
    assert bridge.resolve_precision("auto") in ("fp32", "bf16") and bridge.resolve_precision("auto", "cuda") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        bridge.resolve_precision("fp16")
    with pytest.raises(ValueError, match="for CPUs"):
        bridge.resolve_precision("bf16", "cuda")
