"""planners/experiment_planner.py: the slicing-axis, FSQ and batch-size rules on hand-written fingerprints."""
from __future__ import annotations

import pytest

from codebrain_seg.raw_dataset import (
    BRATS_CHANNELS,
)
from planners.experiment_planner import (
    decide_fsq_levels,
    decide_slicing_axis,
    plan_experiment,
)


def test_slicing_axis_and_fsq_rules():
    assert decide_slicing_axis({"median_spacing": [1.0, 1.0, 1.0]})[0] == 2
    assert decide_slicing_axis({"median_spacing": [0.9, 5.0, 0.9]})[0] == 1
    assert decide_fsq_levels(3)[0] == [8, 8, 8, 5, 5, 5]
    assert decide_fsq_levels(4)[0] == [8, 8, 8, 5, 5, 5]
    assert decide_fsq_levels(2)[0] == [8, 8, 8, 6, 5]
    with pytest.raises(ValueError):
        decide_fsq_levels(1)


def test_batch_never_exceeds_a_small_fraction_of_slices():
    fingerprint = {
        "channel_names": list(BRATS_CHANNELS), "median_spacing": [1.0, 1.0, 1.0], "median_shape": [64, 64, 20],
        "max_brain_extent": [60, 60, 20], "median_brain_extent": [60, 60, 20], "intensity_summary": {},
        "cases": [{"brain_bbox": [[0, 60], [0, 60], [0, 20]]}] * 2,
    }
    plans = plan_experiment(fingerprint, "Dataset001_Tiny")
    assert plans["configurations"]["2d"]["batch_size"] <= max(1, int(40 * 0.05))
    # the memory would allow 8 (GPU) and 4 (CPU): the 5 % cap of the 40 training slices is what sets 2
    for name in ("2d", "2d_cpu"):
        assert plans["configurations"][name]["batch_size"] == 2
        assert "capped at 5 % of the 40 training slices (2)" in plans["configurations"][name]["reasons"]["batch_size"]
