"""Cardiac (missing-slice) plans from a fingerprint: slice axis, heart crop, the two configurations and reasons."""
from __future__ import annotations

import pytest

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit import CoPeDiTConfig
from planners.cardiac_planner import CPU_CONFIGURATION, DEFAULT_FIELD_OF_VIEW_MM, PAPER_CONFIGURATION
from planners.experiment_planner import plan_experiment


def _fingerprint(with_labels: bool = True, spacing=(1.5, 1.5, 10.0)) -> dict:
    cases = []
    for index, slices in enumerate((6, 10, 17)):
        cases.append({"case_id": f"p{index}_ED", "shape": [216, 256, slices], "spacing": list(spacing),
                      "label_bbox": [[80, 140], [100, 150 + 10 * index], [0, slices]] if with_labels else None})
    return {"task": "missing_slices", "channel_names": ["cine"], "num_cases": 3, "median_shape": [216, 256, 10],
            "median_spacing": list(spacing), "cases": cases}


def test_cardiac_plans():
    plans = plan_experiment(_fingerprint(), "Dataset041_Cardiac")
    assert plans["task"] == "missing_slices" and set(plans["configurations"]) == {PAPER_CONFIGURATION,
                                                                                   CPU_CONFIGURATION}
    paper, cpu = (plans["configurations"][name] for name in (PAPER_CONFIGURATION, CPU_CONFIGURATION))
    assert paper["slice_axis"] == cpu["slice_axis"] == 2
    # largest labelled extent: 70 voxels x 1.5 mm = 105 mm, +25 % on each side
    assert paper["in_plane_crop_mm"] == 158.0
    assert paper["target_size"] == [192, 192, 32] and cpu["target_size"] == [64, 64, 16]
    assert CoPeDiTConfig.from_dict(paper["network"]).stack_shape == (192, 192, 32)
    assert CoPeDiTConfig.from_dict(cpu["network"]).elements == "slices"
    assert not paper["default_preprocessing"] and paper["num_slabs"] == 4
    assert "6-17 slices" in cpu["reasons"]["target_size"] and "32" in paper["reasons"]["target_size"]
    assert "largest spacing" in plans["reasons"]["slice_axis"]


def test_without_labels_the_image_centre():
    plans = plan_experiment(_fingerprint(with_labels=False), "Dataset041_Cardiac")
    assert plans["configurations"][CPU_CONFIGURATION]["in_plane_crop_mm"] == DEFAULT_FIELD_OF_VIEW_MM


def test_isotropic_data_is_refused():
    with pytest.raises(InputError, match="no thick slice axis"):
        plan_experiment(_fingerprint(spacing=(1.0, 1.0, 1.2)), "Dataset041_Cardiac")
