"""CPU segmenter recipe (draft; docstring completed with the measured figures at the end of the work)."""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
    ExperimentPlanner,
)

from evaluation.segmentation.short_trainer import (
    nnUNetTrainerShort,
)

logger = logging.getLogger(__name__)

CPU_TARGET_SPACING_MM = 2.0
CPU_BASE_FEATURES = 16
CPU_MAX_FEATURES = 256
CPU_BATCH_SIZE = 2
# Largest patch, in voxels of the target spacing (nnU-Net's axis order). 64 x 80 x 64 at 2 mm holds 128 x 160 x 128 mm,
# most of a cropped brain (median 139 x 171 x 140 mm here); nnU-Net's own choice (80 x 96 x 80, the median brain
# rounded up to the network's divisibility) is mostly padding and 2.5x slower per iteration.
CPU_PATCH_SIZE = (64, 80, 64)
# A memory target far above what the coarse grid needs, so nnU-Net's planner keeps its first patch: the median
# cropped brain at the target spacing (rounded up to the network's divisibility).
_PLANNER_MEMORY_TARGET_GB = 64.0


def cpu_plans_identifier(spacing_mm: float = CPU_TARGET_SPACING_MM, base_features: int = CPU_BASE_FEATURES) -> str:
    """Plans name of the CPU recipe, e.g. ``nnUNetPlans_CPU2mm16`` (spacing in mm, first-stage width)."""
    return f"nnUNetPlans_CPU{spacing_mm:g}mm{base_features}"


class nnUNetPlannerCPU(ExperimentPlanner):  # noqa: N801 (nnU-Net's naming)
    """nnU-Net's ExperimentPlanner at a coarse isotropic 3d_fullres spacing with a narrower U-Net and batch 2."""

    TARGET_SPACING_MM = CPU_TARGET_SPACING_MM
    BASE_FEATURES = CPU_BASE_FEATURES
    MAX_FEATURES = CPU_MAX_FEATURES
    BATCH_SIZE = CPU_BATCH_SIZE
    PATCH_SIZE: tuple[int, ...] | None = CPU_PATCH_SIZE

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = _PLANNER_MEMORY_TARGET_GB,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str | None = None,
                 overwrite_target_spacing: Sequence[float] | None = None, suppress_transpose: bool = False) -> None:
        spacing = [float(s) for s in overwrite_target_spacing] if overwrite_target_spacing is not None \
            else [float(self.TARGET_SPACING_MM)] * 3
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or cpu_plans_identifier(max(spacing), self.BASE_FEATURES), spacing,
                         suppress_transpose)
        self.UNet_base_num_features = self.BASE_FEATURES
        self.UNet_max_features_3d = self.MAX_FEATURES

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier, approximate_n_voxels_dataset,
                                    _cache):
        """nnU-Net's plan; in 3D the patch capped at ``PATCH_SIZE`` (by capping the shape nnU-Net starts its patch
        search from) and the batch set to ``BATCH_SIZE``."""
        is_3d = len(spacing) == 3
        start_shape = median_shape
        if is_3d and self.PATCH_SIZE is not None:
            start_shape = np.minimum(np.asarray(median_shape), np.asarray(self.PATCH_SIZE))
        plan = super().get_plans_for_configuration(spacing, start_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        if is_3d:
            plan["median_image_size_in_voxels"] = median_shape
            plan["batch_size"] = self.BATCH_SIZE
        return plan


class _TrainingBudgetReached(Exception):
    """Raised at an epoch's end when the training's time budget leaves no room for another epoch."""


class nnUNetTrainerCPU(nnUNetTrainerShort):  # noqa: N801 (nnU-Net's trainer naming)
    """nnU-Net's trainer for the CPU plans: ``EPOCHS`` x ``ITERATIONS_PER_EPOCH`` under bf16 autocast (where the CPU
    computes it natively), checkpoints every epoch, no test-time mirroring (all from ``nnUNetTrainerShort``), and a
    wall-clock guard: when the epochs measured so far say the schedule would end after
    ``TRAINING_BUDGET_MINUTES`` (counted from the first epoch's start in this process), the schedule is cut to
    the epochs that fit and the poly learning rate is re-spread over them, so a slow or busy machine still ends
    in time with a fully decayed learning rate. ``TRAINING_BUDGET_MINUTES = None`` trains the fixed schedule.
    """

    EPOCHS = 32
    ITERATIONS_PER_EPOCH = 50
    VALIDATION_ITERATIONS_PER_EPOCH = 1
    TRAINING_BUDGET_MINUTES: float | None = 58.0

    def on_train_start(self) -> None:
        super().on_train_start()
        self._budget_start = (time.monotonic(), self.current_epoch)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.TRAINING_BUDGET_MINUTES is None:
            return
        started, first_epoch = self._budget_start
        elapsed = time.monotonic() - started
        per_epoch = elapsed / max(self.current_epoch - first_epoch, 1)
        fitting = self.current_epoch + int((self.TRAINING_BUDGET_MINUTES * 60 - elapsed) // per_epoch)
        if fitting < self.num_epochs:
            self.num_epochs = max(fitting, self.current_epoch)
            self.lr_scheduler.max_steps = max(self.num_epochs, 1)
            self.print_to_log_file(f"time budget of {self.TRAINING_BUDGET_MINUTES:g} min ({per_epoch:.0f} s per "
                                   f"epoch so far): schedule cut to {self.num_epochs} epochs")
        if self.current_epoch >= self.num_epochs:
            raise _TrainingBudgetReached

    def run_training(self) -> None:
        """nnU-Net's training loop; when the time budget ends it early, nnU-Net's own end of training follows."""
        try:
            super().run_training()
        except _TrainingBudgetReached:
            self.on_train_end()
