"""CPU segmenter recipe: nnU-Net 3d_fullres planned for a 2-core CPU and an hour of training.

nnU-Net's own 3d_fullres plans for BraTS (1 mm, 128^3 patches, 32 first-stage features, 1000 x 250 iterations)
need days on a CPU, and the project's ``nnUNetTrainerShort`` on 0.5-GB plans (48 x 64 x 48 patches of 1 mm)
sees a fraction of a brain per sample. This recipe keeps nnU-Net's pipeline (fingerprint, z-score normalisation in
the brain mask, resampling, region-based DC+CE loss with deep supervision, SGD + poly schedule, augmentation,
sliding-window prediction) and changes only what decides CPU cost, through nnU-Net's own extension points:

* :class:`nnUNetPlannerCPU` (an ``ExperimentPlanner``): 3d_fullres at **2 mm isotropic**
  (``overwrite_target_spacing``), a PlainConvUNet with **16-32-64-128-256** features (nnU-Net: 32-...-320),
  patch **64 x 80 x 64** (128 x 160 x 128 mm: most of a cropped brain; nnU-Net's choice at 2 mm, 80 x 96 x 80,
  is mostly padding and 2.5x slower), batch 2; plans name ``nnUNetPlans_CPU2mm16`` (:func:`cpu_plans_identifier`).
  2 mm costs little accuracy: the ground truth resampled to 2 mm and back keeps WT 97.6, TC 97.8, ET 87.0 % Dice
  on fold 0's held-out cases (1.5 mm: 98.8 / 98.9 / 92.2, but 5x slower per iteration).
* :class:`nnUNetTrainerCPU` (from ``nnUNetTrainerShort``: bf16 autocast where the CPU computes it natively, no
  test-time mirroring, a checkpoint per epoch): 32 epochs x 50 iterations and a wall-clock guard
  (``TRAINING_BUDGET_MINUTES`` = 58) that shortens the schedule, and re-spreads the poly learning rate over it,
  when the epochs so far say it would not end in time (the machine is shared).
  :class:`nnUNetTrainerCPUDA5`, the same with nnU-Net's heavier ``DA5`` augmentation, is the better of the two
  (recommended; one draw on 3 held-out cases).
* :func:`plan_and_preprocess_cpu`: fingerprint, these plans and 3d_fullres preprocessing (37 s for 12 cases).

Measured on fold 0 of the 15 real BraTS 2018 cases (12 training, 3 held out), 1 torch thread, augmentation in the
training thread, on the shared 2-core AVX512-BF16 EPYC (load average 2.6-6.3 from another engineer's tests):
network 1.7-2.1 s per iteration on an idle core; 2.4-2.6 s on average over a run (1.8-3.8 s with the load).
Two threads on the shared machine: 4.7-6.9 s per iteration (slower; each OpenMP region waits for a busy core).

=========================================  ==========================  =====  =====  =====  =====
run (held-out Dice %)                      iterations, training min     WT     TC     ET    mean
=========================================  ==========================  =====  =====  =====  =====
nnUNetTrainerShort (the issue's figure)    6 x 20, minutes                -      -      -     31
nnUNetTrainerCPU, probe                    3 x 25, 2.6                  52.2   41.9    0.0   31.4
nnUNetTrainerCPU                           25 x 50, 50.9                70.5   44.2   32.9   49.2
nnUNetTrainerCPUDA5 (best)                 25 x 50, 55.4                74.0   64.9   47.0   62.0
nnUNetTrainerCPUDA5, test-time mirroring   same model                   73.4   63.0   44.9   60.4
=========================================  ==========================  =====  =====  =====  =====

(Prediction without mirroring unless said: 19 s for the 3 cases, 78 s with it. The 32-epoch schedules were cut
to 25 by the time guard under the load.)

The target (mean >= 70 %, WT >= 85 %) is **not** reached. The limit is generalisation from 12 training cases, not
the schedule: the 1250-iteration model scores WT 89.3 / TC 87.9 / ET 78.7 (mean 85.3) on four of its own
training cases, and its held-out errors are whole tissue classes (one case's oedema, an LGG's necrotic core,
one case's enhancing tumour), not boundaries. The runs: docs/results/real_data.md, "A CPU segmenter".

Trainers by name: :data:`TRAINERS` (no search). nnU-Net's own search through ``nnUNet_extTrainer`` imports every
trainer module of nnunetv2 and fails in this project's environment (PyPI's torchvision cannot load its operators
beside the CPU torch build), so the bridge's ``trainer_class`` takes these from :data:`TRAINERS`
(``codebrain_evaluate_segmentation --seg-recipe cpu``). The planner needs
``nnUNet_n_proc_DA`` >= 1 while it plans (it sets torch's thread count to it); :func:`plan_and_preprocess_cpu`
sees to that (checked end to end on a fresh bridge folder tree: 86 s for fingerprint, plans and preprocessing).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.plan_and_preprocess_api import (
    extract_fingerprint_dataset,
    plan_experiment_dataset,
    preprocess_dataset,
)
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5

from evaluation.segmentation.short_trainer import nnUNetTrainerShort

logger = logging.getLogger(__name__)

CPU_TARGET_SPACING_MM = 2.0
CPU_BASE_FEATURES = 16
CPU_MAX_FEATURES = 256
CPU_BATCH_SIZE = 2
# Largest patch, in voxels of the target spacing (nnU-Net's axis order). 64 x 80 x 64 at 2 mm holds 128 x 160 x 128 mm,
# most of a cropped brain (median 139 x 171 x 140 mm here); nnU-Net's own choice (80 x 96 x 80, the median brain
# rounded up to the network's divisibility) is mostly padding and 2.5x slower per iteration.
CPU_PATCH_SIZE = (64, 80, 64)
# A memory target far above what the coarse grid needs, so nnU-Net's planner never shrinks the patch it starts from
# (the median cropped brain at the target spacing, capped at CPU_PATCH_SIZE).
_PLANNER_MEMORY_TARGET_GB = 64.0


def cpu_plans_identifier(spacing_mm: float = CPU_TARGET_SPACING_MM, base_features: int = CPU_BASE_FEATURES) -> str:
    """Plans name of the CPU recipe, e.g. ``nnUNetPlans_CPU2mm16`` (spacing in mm, first-stage width)."""
    return f"nnUNetPlans_CPU{spacing_mm:g}mm{base_features}"


class nnUNetPlannerCPU(ExperimentPlanner):
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


class nnUNetTrainerCPU(nnUNetTrainerShort):
    """nnU-Net's trainer for the CPU plans: ``EPOCHS`` x ``ITERATIONS_PER_EPOCH`` under bf16 autocast (where the CPU
    computes it natively), checkpoints every epoch, no test-time mirroring (all from ``nnUNetTrainerShort``), and a
    wall-clock guard: when the epochs measured so far say the schedule would end after
    ``TRAINING_BUDGET_MINUTES`` (counted from the first epoch's start in this process; a resumed run gets the
    whole budget again), the schedule is cut to the epochs that fit (re-extended, up to ``EPOCHS``, when an epoch
    is to spare again) and the poly learning rate is re-spread over them, so a slow or busy machine still ends in
    time with a fully decayed learning rate. ``TRAINING_BUDGET_MINUTES = None`` trains the fixed schedule.
    """

    EPOCHS = 32
    ITERATIONS_PER_EPOCH = 50
    VALIDATION_ITERATIONS_PER_EPOCH = 1
    TRAINING_BUDGET_MINUTES: float | None = 58.0

    def on_train_start(self) -> None:
        super().on_train_start()
        self._budget_start = (time.monotonic(), self.current_epoch, self.num_epochs)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.TRAINING_BUDGET_MINUTES is None:
            return
        started, first_epoch, planned_epochs = self._budget_start
        elapsed = time.monotonic() - started
        per_epoch = elapsed / max(self.current_epoch - first_epoch, 1)
        fitting = self.current_epoch + int((self.TRAINING_BUDGET_MINUTES * 60 - elapsed) // per_epoch)
        epochs = self.num_epochs
        if fitting < epochs:
            epochs = fitting
        elif fitting > epochs + 1:  # extend only with an epoch to spare, so the schedule does not flap
            epochs = min(planned_epochs, fitting - 1)
        epochs = max(epochs, self.current_epoch)
        if epochs != self.num_epochs:
            self.num_epochs = epochs
            self.lr_scheduler.max_steps = max(epochs, 1)
            self.print_to_log_file(f"time budget of {self.TRAINING_BUDGET_MINUTES:g} min ({per_epoch:.0f} s per "
                                   f"epoch so far): schedule set to {epochs} epochs")
        if self.current_epoch >= self.num_epochs:
            raise _TrainingBudgetReached

    def run_training(self) -> None:
        """nnU-Net's training loop; when the time budget ends it early, nnU-Net's own end of training follows."""
        try:
            super().run_training()
        except _TrainingBudgetReached:
            self.on_train_end()


class nnUNetTrainerCPUDA5(nnUNetTrainerCPU, nnUNetTrainerDA5):
    """:class:`nnUNetTrainerCPU` with nnU-Net's heavier ``DA5`` augmentation (more rotation and scaling, local
    intensity changes, blanked rectangles ...); about as cheap per sample (0.16 s vs 0.17 s on one thread)."""


# The trainers this module defines, by the name nnU-Net stores in checkpoints (for the bridge's trainer lookup).
TRAINERS: dict[str, type] = {cls.__name__: cls for cls in (nnUNetTrainerCPU, nnUNetTrainerCPUDA5)}
CPU_TRAINER = nnUNetTrainerCPU.__name__


def plan_and_preprocess_cpu(dataset_name: str, preprocessed_dir: Path, spacing_mm: float = CPU_TARGET_SPACING_MM,
                            num_processes: int = 2) -> str:
    """nnU-Net fingerprint, CPU plans (:class:`nnUNetPlannerCPU`) and 3d_fullres preprocessing; returns the plans name.

    For a raw dataset ``dataset_name`` (``DatasetXXX_Name``) under the current ``nnUNet_raw``; the caller sets the
    ``nnUNet_*`` variables (``with nnunet_environment(folders):``), ``preprocessed_dir`` is
    ``$nnUNet_preprocessed/DatasetXXX_Name``. Each step is skipped when its result exists. nnU-Net starts workers
    with spawn: scripts calling this need an ``if __name__ == "__main__":`` guard.
    """
    plans_name = cpu_plans_identifier(spacing_mm, nnUNetPlannerCPU.BASE_FEATURES)
    marker = Path(preprocessed_dir) / f".codebrain_preprocessed_{plans_name}"
    if marker.is_file():
        return plans_name
    dataset_id = int(dataset_name[len("Dataset"):].split("_")[0])
    extract_fingerprint_dataset(dataset_id, num_processes=num_processes, clean=False, verbose=False,
                                show_progress_bar=False)
    if not (Path(preprocessed_dir) / f"{plans_name}.json").is_file():
        # nnU-Net's planner sets torch's thread count to nnUNet_n_proc_DA while it sizes networks: 0 would fail.
        saved_workers = os.environ.get("nnUNet_n_proc_DA")
        if saved_workers is not None and int(saved_workers) < 1:
            os.environ["nnUNet_n_proc_DA"] = "1"
        try:
            plan_experiment_dataset(dataset_id, nnUNetPlannerCPU, overwrite_target_spacing=[float(spacing_mm)] * 3,
                                    overwrite_plans_name=plans_name)
        finally:
            if saved_workers is not None:
                os.environ["nnUNet_n_proc_DA"] = saved_workers
    preprocess_dataset(dataset_id, plans_name, ["3d_fullres"], [num_processes], verbose=False,
                       show_progress_bar=False)
    marker.touch()
    return plans_name
