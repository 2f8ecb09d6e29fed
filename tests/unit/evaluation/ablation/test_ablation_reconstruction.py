"""evaluation/ablation/reconstruction.py: oracle-code decoding with F_c of the masked stack or of zeros (the
F_c-reliance diagnostic), on tiny untrained networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codebrain_seg.networks import CodeBrainConfig, StageOneModel
from evaluation.ablation.reconstruction import evaluation_tag, fc_reliance, reconstruct

TINY = {"posterior_width": 4, "common_width": 4, "decoder_width": 4, "depth": 1}


def _model(**switches: object) -> StageOneModel:
    torch.manual_seed(0)
    return StageOneModel(CodeBrainConfig(in_channels=4, **TINY, **switches)).eval()  # type: ignore[arg-type]


def test_fc_of_zeros_is_the_blank_control_and_measures_how_much_fc_is_used() -> None:
    full = np.random.default_rng(0).uniform(0.1, 0.9, size=(4, 3, 16, 16)).astype(np.float32)
    with_fc, blank, no_fc = _model(), _model(blank_fc=True), _model(use_fc=False)
    available = [True, False, True, False]
    zeros = reconstruct(with_fc, full, available, fc_input="zeros")
    assert zeros.shape == full.shape
    # the F_c model decoding with F_c of zeros is the blank control (same weights), bit for bit
    assert np.array_equal(zeros, reconstruct(blank, full, available))
    assert not np.array_equal(zeros, reconstruct(with_fc, full, available))
    reliance = fc_reliance(with_fc, full, patterns=["1010", "1000"], batch_size=2)
    assert set(reliance) == {"masked", "zeros", "gap_db"} and reliance["masked"] != reliance["zeros"]
    assert reliance["gap_db"] == pytest.approx(reliance["masked"] - reliance["zeros"])
    # a model that has no F_c, or whose F_c is already blank, decodes the same either way
    for model in (blank, no_fc):
        assert fc_reliance(model, full, patterns=["1010"])["gap_db"] == 0.0
    with pytest.raises(ValueError, match="fc_input must be one of"):
        reconstruct(with_fc, full, available, fc_input="ones")


def test_the_diagnostic_is_scored_into_its_own_folder() -> None:
    assert evaluation_tag("val") == "val" and evaluation_tag("test", "masked") == "test"
    assert evaluation_tag("val", "zeros") == "val-fc_zeros" and evaluation_tag("/data/held_out", "zeros") == \
        "held_out-fc_zeros"
    assert evaluation_tag("val", checkpoint="best") == "val-best"
    assert evaluation_tag("val", "zeros", "best") == "val-fc_zeros-best"
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        evaluation_tag("val", checkpoint="latest")
