"""The CoPeDiT stages with slices as elements (trainers/copedit/common.py, data.py): missing sets and augmentation.

Asserts: the per-iteration missing sets of a cardiac configuration are consecutive runs of every length 1..m-1
(pure in the iteration) while the brain's stay random subsets; the validation patterns are the 9 runs of 4 slabs;
a flip of the slice axis flips the whole stack (slab order reversed with the slices in each slab); the per-count
layout is refused for slices; a cardiac configuration's network input is its target stack.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codebrain_seg.errors import InputError
from planners.cardiac_preprocessing import slab_array_to_stack, stack_to_slab_array
from planners.experiment_planner import plan_experiment
from trainers.copedit.common import all_missing_masks, copedit_config, iteration_missing_masks
from trainers.copedit.data import augment_case


def _consecutive(row: torch.Tensor) -> bool:
    where = torch.nonzero(row)[:, 0]
    return len(where) > 0 and int(where[-1] - where[0]) + 1 == len(where)


def test_missing_runs_per_iteration():
    rows = torch.cat([iteration_missing_masks(7, 0, it, 16, 4, elements="slices") for it in range(20)])
    assert all(_consecutive(row) for row in rows)
    assert set(rows.sum(dim=1).tolist()) == {1, 2, 3}
    again = iteration_missing_masks(7, 0, 3, 16, 4, elements="slices")
    assert torch.equal(again, iteration_missing_masks(7, 0, 3, 16, 4, elements="slices"))
    brain = torch.cat([iteration_missing_masks(7, 0, it, 16, 4) for it in range(20)])
    assert not all(_consecutive(row) for row in brain)  # subsets such as {T1, T2} without T1Gd


def test_validation_runs():
    runs = all_missing_masks(4, "slices")
    assert runs.shape == (9, 4) and len({tuple(r.tolist()) for r in runs}) == 9
    assert all(_consecutive(row) for row in runs)
    assert all_missing_masks(4).shape == (14, 4)


def test_flip_of_the_slice_axis_flips_the_stack():
    stack = np.random.default_rng(0).random((8, 8, 16)).astype(np.float32)
    slabs = stack_to_slab_array(stack, 4)
    spec = {"flip_probability": 1.0, "rotate90_probability": 0.0, "scale_probability": 0.0, "shift_probability": 0.0,
            "flip_reverses_slabs": True}
    flipped = augment_case(slabs, np.random.default_rng(0), spec)
    assert np.array_equal(slab_array_to_stack(flipped), stack[::-1, ::-1, ::-1])


def test_cardiac_configuration_and_per_count_refusal():
    cases = [{"case_id": f"p{i}_ED", "shape": [216, 256, 10], "spacing": [1.5, 1.5, 10.0],
              "label_bbox": [[80, 140], [100, 150], [0, 10]]} for i in range(3)]
    plans = plan_experiment({"task": "missing_slices", "channel_names": ["cine"], "num_cases": 3,
                             "median_shape": [216, 256, 10], "median_spacing": [1.5, 1.5, 10.0], "cases": cases},
                            "Dataset041_Cardiac")
    configuration = plans["configurations"]["3d_cardiac_cpu"]
    config = copedit_config(configuration)
    assert config.elements == "slices" and list(config.stack_shape) == configuration["target_size"]
    assert copedit_config(configuration, "mask").prompt_source == "mask"
    with pytest.raises(InputError, match="per_count"):
        copedit_config(configuration, "per_count")
