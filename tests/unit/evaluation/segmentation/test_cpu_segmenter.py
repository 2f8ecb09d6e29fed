"""The CPU segmenter recipe as the bridge sees it: its plans name, its trainers found by name, its budget."""
from __future__ import annotations

import pytest

from codebrain_seg.errors import InputError
from evaluation.segmentation import cpu_segmenter, nnunet_bridge as bridge


def test_recipe_plans_names():
    assert bridge.plans_name_of("default") == "nnUNetPlans"
    assert bridge.plans_name_of("default", 0.5) == "nnUNetPlans_0.5GB"
    assert bridge.plans_name_of("cpu") == "nnUNetPlans_CPU2mm16" == cpu_segmenter.cpu_plans_identifier()
    with pytest.raises(InputError, match="cpu recipe plans its own"):
        bridge.plans_name_of("cpu", 8.0)
    with pytest.raises(InputError, match="recipe must be one of default, cpu"):
        bridge.plans_name_of("gpu")


def test_the_recipe_trainers_are_found_by_the_name_checkpoints_store(tmp_path):
    assert bridge.trainer_class("nnUNetTrainerCPUDA5") is cpu_segmenter.nnUNetTrainerCPUDA5
    assert bridge.trainer_class("nnUNetTrainerCPU") is cpu_segmenter.nnUNetTrainerCPU
    folder = tmp_path / "nnUNetTrainerCPUDA5__nnUNetPlans_CPU2mm16__3d_fullres"
    folder.mkdir()
    budget = bridge.training_budget(folder)  # no training.json: the trainer's own schedule
    assert budget == {"trainer": "nnUNetTrainerCPUDA5", "epochs": cpu_segmenter.nnUNetTrainerCPU.EPOCHS,
                      "iterations_per_epoch": cpu_segmenter.nnUNetTrainerCPU.ITERATIONS_PER_EPOCH, "seconds": None}


def test_the_cpu_planner_keeps_the_recipe_sizes():
    planner = cpu_segmenter.nnUNetPlannerCPU
    assert (planner.TARGET_SPACING_MM, planner.BASE_FEATURES, planner.BATCH_SIZE) == (2.0, 16, 2)
    assert tuple(planner.PATCH_SIZE) == (64, 80, 64)
