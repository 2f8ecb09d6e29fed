"""Experiment planner: turns a dataset fingerprint into ``codebrainPlans.json``.

Each decision is a small function that returns the value and the reason, and both go into the plans so a user
can read (and edit) why a value was chosen. Training reads only the plans.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from codebrain_seg.errors import InputError, UnknownNameError
from codebrain_seg.plans import PLANS_NAME, PLANS_VERSION
from planners.budget import (
    DOWNSAMPLINGS,
    PAPER_SIZE,
    NetworkSize,
    approximate_parameters,
    training_memory_bytes,
)
from planners.cardiac_planner import is_missing_slices, plan_cardiac_experiment
from planners.copedit_planner import plan_copedit_configurations
from planners.sizing import (
    CPU_EFFECTIVE_GFLOPS,  # noqa: F401 (re-exported: where the analytic CPU estimate's constant was)
    SizedConfiguration,
    StepCostFunction,
    analytic_step_costs,
    size_cpu_configuration,
)

# Levels of the paper (d = 6, codebook 64,000) used for both IXI (3 sequences) and BraTS (4 sequences).
PAPER_FSQ_LEVELS = [8, 8, 8, 5, 5, 5]
# Level sets recommended by the FSQ paper (Mentzer et al., ICLR 2024, Table 1) per codebook size 2^bits.
FSQ_LEVELS_BY_BITS = {10: [8, 5, 5, 5], 12: [7, 5, 5, 5, 5], 14: [8, 8, 8, 6, 5], 16: [8, 8, 8, 5, 5, 5]}
VQ_CODEBOOK_SIZE = 1024  # the VQ ablation's codebook (codebrain_seg.networks.quantizers.DEFAULT_CODEBOOK_SIZE)
ANISOTROPY_RATIO = 2.0
UPPER_PERCENTILE = 99.5
TRAINING_SLICE_MIN_BRAIN_FRACTION = 0.05
MAX_BATCH_FRACTION_OF_SLICES = 0.05
PAPER_BATCH_SIZE = 8
PAPER_ITERATIONS = 300_000
CPU_NETWORK_LADDER = [
    NetworkSize(8, 16, 16, 1),
    NetworkSize(16, 24, 24, 2),
    NetworkSize(16, 32, 32, 2),
    NetworkSize(16, 48, 48, 3),
    NetworkSize(32, 64, 64, 4),
]  # the paper's network is the 2d configuration: on a CPU its 1.7 GB checkpoints and hours per stage never pay
CPU_BATCH_SIZE = 4


def decide_slicing_axis(fingerprint: dict[str, Any]) -> tuple[int, str]:
    """Axis (in RAS voxel order) along which 2D slices are taken."""
    spacing = fingerprint["median_spacing"]
    if max(spacing) / min(spacing) >= ANISOTROPY_RATIO:
        axis = int(np.argmax(spacing))
        return axis, (f"median spacing {spacing} is anisotropic (ratio >= {ANISOTROPY_RATIO}): slice across the "
                      f"coarsest axis {axis} so every 2D slice keeps the full in-plane resolution")
    return 2, (f"median spacing {spacing} is near isotropic: axial slices (the S axis of the canonical RAS order), "
               "as the papers use for BraTS and IXI")


def decide_crop(fingerprint: dict[str, Any], slicing_axis: int) -> tuple[list[int], str]:
    """In-plane crop that contains every case's brain, rounded up to a multiple of 2^downsamplings."""
    in_plane = [a for a in range(3) if a != slicing_axis]
    multiple = 2 ** DOWNSAMPLINGS
    extents = [int(fingerprint["max_brain_extent"][a]) for a in in_plane]
    crop = [int(math.ceil(e / multiple) * multiple) for e in extents]
    return crop, (f"largest brain extent over all cases in-plane is {extents}; rounded up to a multiple of "
                  f"{multiple} (2^{DOWNSAMPLINGS} encoder down-samplings) so the code grid is whole and no brain "
                  "voxel of any case is cut; the crop window is centred on each case's brain")


def decide_evaluation_slices(fingerprint: dict[str, Any], slicing_axis: int) -> tuple[int, str]:
    """Number of middle slices scored by the paper protocol."""
    names = set(fingerprint["channel_names"])
    if names == {"T1", "T1Gd", "T2", "FLAIR"}:
        return 80, "BraTS sequences: the papers score the middle 80 axial slices"
    if names == {"T1", "T2", "PD"}:
        return 90, "IXI sequences: the papers score the middle 90 axial slices"
    extent = float(fingerprint["median_brain_extent"][slicing_axis])
    count = max(1, int(round(0.6 * extent)))
    return count, (f"no paper setting for these sequences: 60 % of the median brain extent ({extent:.0f}) "
                   "along the slicing axis, the fraction 80 slices are of a BraTS brain")


def decide_fsq_levels(num_channels: int) -> tuple[list[int], str]:
    """FSQ levels: the paper's for 3-5 sequences; a smaller codebook for 2 (less information to encode)."""
    if num_channels < 2:
        raise InputError("imputation needs at least 2 sequences per case")
    if num_channels <= 2:
        return FSQ_LEVELS_BY_BITS[14], ("2 sequences carry less information than the papers' 3 (IXI) or 4 "
                                        "(BraTS): the FSQ paper's 2^14 level set")
    return list(PAPER_FSQ_LEVELS), (f"{num_channels} sequences: the papers' levels [8,8,8,5,5,5] (d = 6, 64,000 "
                                    "codes), used for both 3 (IXI) and 4 (BraTS) sequences; kept for 5+ because a "
                                    "larger codebook makes Stage II code prediction harder")


def decide_vq_codebook_size() -> tuple[int, str]:
    """Codebook size of the VQ ablation (``--ablation vq``); FSQ, the default, does not use it."""
    return VQ_CODEBOOK_SIZE, (
        f"{VQ_CODEBOOK_SIZE} = 2^10 entries for the VQ ablation only: a usual VQ-VAE/VQGAN size at which a plain "
        "codebook is still well used (large ones collapse onto few entries, FSQ's motivation), and Stage II's "
        "per-cell softmax over K stays small (K = FSQ's 64,000 would need a 49M-weight head and ~4 GB of logits "
        "per 16-slice batch of 32x32 code maps)")


def total_training_slices(fingerprint: dict[str, Any], slicing_axis: int) -> int:
    """Number of brain slices in the dataset along the slicing axis."""
    return int(sum(c["brain_bbox"][slicing_axis][1] - c["brain_bbox"][slicing_axis][0] for c in fingerprint["cases"]))


def decide_batch_size(size: NetworkSize, crop: list[int], channels: int, memory_gb: float, cap: int,
                      num_slices: int) -> tuple[int, str]:
    """Largest batch up to ``cap`` whose estimated training memory fits, never more than 5 % of the slices."""
    pixels = crop[0] * crop[1]
    parameters = approximate_parameters(size, channels)
    fitting = 0
    for batch in range(1, cap + 1):
        if training_memory_bytes(size, pixels, batch, parameters) <= memory_gb * 1e9:
            fitting = batch
    by_data = max(1, int(num_slices * MAX_BATCH_FRACTION_OF_SLICES))
    batch = max(1, min(fitting, by_data, cap))
    estimate = training_memory_bytes(size, pixels, batch, parameters) / 1e9
    return batch, (f"largest batch <= {cap} whose estimated training memory fits {memory_gb:g} GB "
                   f"({fitting or 'none'}), capped at 5 % of the {num_slices} training slices ({by_data}); "
                   f"estimated {estimate:.1f} GB at batch {batch}")


def decide_cpu_configuration(crop: list[int], channels: int, batch_size: int, validation_slices: int,
                             step_costs: StepCostFunction | None = None,
                             budget_minutes: float | None = None) -> SizedConfiguration:
    """The CPU configuration's network, iterations and validation cadence (:func:`planners.sizing.size_cpu_configuration`)
    from ``step_costs`` (default: the analytic FLOP estimate), for the default half hour per stage or a time budget."""
    costs = step_costs or analytic_step_costs(crop, channels)
    return size_cpu_configuration(CPU_NETWORK_LADDER, batch_size, validation_slices, costs, budget_minutes)


def decide_cpu_network(crop: list[int], channels: int) -> tuple[NetworkSize, int, str]:
    """The analytic CPU network, iterations and reason at batch ``CPU_BATCH_SIZE`` (offline planning, benchmarks)."""
    sized = decide_cpu_configuration(crop, channels, CPU_BATCH_SIZE, 0)
    return sized.network, sized.iterations, sized.reason


def validation_slices_per_case(fingerprint: dict[str, Any], slicing_axis: int, max_per_case: int = 32) -> int:
    """Middle slices one validation scores per case (the trainer's ``max_val_slices_per_case`` at most)."""
    return max(1, min(max_per_case, int(fingerprint["median_brain_extent"][slicing_axis])))


def estimate_validation_slices(fingerprint: dict[str, Any], slicing_axis: int, max_per_case: int = 32) -> int:
    """Slices one validation scores: the validation cases of a 5-fold split times the middle slices per case."""
    cases = max(1, math.ceil(len(fingerprint["cases"]) / 5))
    return cases * validation_slices_per_case(fingerprint, slicing_axis, max_per_case)


def _optimisation(iterations: int, batch_size: int, val_every: int | None = None) -> dict[str, Any]:
    cadence = {} if val_every is None else {"val_every": val_every}
    return {
        "stage1": {"iterations": iterations, "batch_size": batch_size, **cadence},
        "stage2": {"iterations": iterations, "batch_size": 2 * batch_size, **cadence},
        "generator_optimizer": {"name": "AdamW", "lr": 5e-4, "betas": [0.9, 0.9], "weight_decay": 0.0,
                                "schedule": "cosine per iteration to eta_min", "eta_min": 5e-5},
        "discriminator_optimizer": {"name": "AdamW", "lr": 5e-5, "betas": [0.5, 0.9], "weight_decay": 0.0,
                                    "schedule": "constant"},
        "loss": {"lambda_missing": 20.0, "lambda_available": 5.0, "adversarial_weight": 0.1,
                 "adversarial_start_fraction": 0.2},
        "reason": "the reference implementation's optimisers, schedule and loss weights "
                  "(the CodeBrain reference implementation's training); Stage II uses twice the Stage I batch",
    }


def plan_experiment(fingerprint: dict[str, Any], dataset_name: str, gpu_memory_gb: float = 24.0,
                    step_costs: StepCostFunction | None = None, time_budget_minutes: float | None = None,
                    validation_slices: int | None = None) -> dict[str, Any]:
    """Plans for a dataset: the paper-faithful ``2d`` configuration and a lighter ``2d_cpu`` one, plus CoPeDiT's
    3D-volume ``3d_copedit`` / ``3d_copedit_cpu`` (``planners.copedit_planner``); a missing-slice dataset
    (``task: missing_slices``) gets the cardiac plans of ``planners.cardiac_planner`` instead.

    ``2d_cpu`` is sized by ``step_costs`` (default: the analytic estimate; ``codebrain_seg.run.planning`` passes
    this machine's measured costs) for half an hour per stage, or for ``time_budget_minutes`` of training in all;
    ``validation_slices`` (default: estimated from the fingerprint) is what one validation scores."""
    if is_missing_slices(fingerprint):
        return plan_cardiac_experiment(fingerprint, dataset_name)

    channels = len(fingerprint["channel_names"])
    axis, axis_reason = decide_slicing_axis(fingerprint)
    crop, crop_reason = decide_crop(fingerprint, axis)
    eval_slices, eval_reason = decide_evaluation_slices(fingerprint, axis)
    levels, levels_reason = decide_fsq_levels(channels)
    codebook_size, codebook_reason = decide_vq_codebook_size()
    num_slices = total_training_slices(fingerprint, axis)
    code_grid = [c // 2 ** DOWNSAMPLINGS for c in crop]

    paper_batch, paper_batch_reason = decide_batch_size(PAPER_SIZE, crop, channels, gpu_memory_gb,
                                                        PAPER_BATCH_SIZE, num_slices)
    cpu_batch, cpu_batch_reason = decide_batch_size(CPU_NETWORK_LADDER[0], crop, channels, 8.0, CPU_BATCH_SIZE,
                                                    num_slices)
    if validation_slices is None:
        validation_slices = estimate_validation_slices(fingerprint, axis)
    sized = decide_cpu_configuration(crop, channels, cpu_batch, validation_slices, step_costs, time_budget_minutes)
    fitting_batch, _ = decide_batch_size(sized.network, crop, channels, 8.0, CPU_BATCH_SIZE, num_slices)
    if fitting_batch < cpu_batch:  # the chosen network needs more memory than the smallest: size again at its batch
        cpu_batch, cpu_batch_reason = decide_batch_size(sized.network, crop, channels, 8.0, CPU_BATCH_SIZE,
                                                        num_slices)
        sized = decide_cpu_configuration(crop, channels, cpu_batch, validation_slices, step_costs,
                                         time_budget_minutes)

    shared = {
        "data_identifier": f"{PLANS_NAME}_2d",
        "slicing_axis": axis,
        "crop_size": crop,
        "downsamplings": DOWNSAMPLINGS,
        "code_grid": code_grid,
        "fsq_levels": levels,
        "vq_codebook_size": codebook_size,
        "training_slices": {"min_brain_fraction": TRAINING_SLICE_MIN_BRAIN_FRACTION},
        "evaluation_slices": eval_slices,
    }
    configurations = {
        "2d": {**shared, "network": PAPER_SIZE.as_dict(), "batch_size": paper_batch,
               **{"optimisation": _optimisation(PAPER_ITERATIONS, paper_batch)},
               "reasons": {"network": "the paper's reference sizes (NAFNet widths 32/96/96, 6 bottleneck blocks)",
                           "batch_size": paper_batch_reason,
                           "iterations": "the reference's 300k iterations per stage"}},
        "2d_cpu": {**shared, "network": sized.network.as_dict(), "batch_size": cpu_batch,
                   **{"optimisation": _optimisation(sized.iterations, cpu_batch, sized.val_every)},
                   "timing": sized.timing(cpu_batch, validation_slices, time_budget_minutes),
                   "reasons": {"network": sized.reason, "batch_size": cpu_batch_reason,
                               "iterations": sized.reason}},
        **plan_copedit_configurations(fingerprint, gpu_memory_gb),
    }
    return {
        "plans_name": PLANS_NAME,
        "plans_version": PLANS_VERSION,
        "dataset_name": dataset_name,
        "channel_names": fingerprint["channel_names"],
        "original_median_shape": fingerprint["median_shape"],
        "original_median_spacing": fingerprint["median_spacing"],
        "voxel_order": "closest canonical RAS (nibabel); mapped back to each file's own order on output",
        "normalization": {
            "scheme": "per volume and sequence: clip(value / p_upper, 0, 1), p_upper = percentile inside the brain",
            "upper_percentile": UPPER_PERCENTILE,
            "brain_mask": "voxels non-zero in any sequence",
            "reason": "the papers min-max each sequence into [0, 1]; a robust upper percentile instead of the "
                      "maximum keeps single bright outliers (e.g. int16 32767 in a BraTS 2018 case) from "
                      "squashing the image, and the lower end stays at the physical zero of the background",
        },
        "intensity_reference": fingerprint["intensity_summary"],
        "reasons": {"slicing_axis": axis_reason, "crop_size": crop_reason, "evaluation_slices": eval_reason,
                    "fsq_levels": levels_reason, "vq_codebook_size": codebook_reason,
                    "training_slices": f"slices whose brain area is at least "
                                       f"{TRAINING_SLICE_MIN_BRAIN_FRACTION:.0%} of the case's largest brain slice: "
                                       "nearly empty edge slices teach nothing",
                    "code_grid": f"crop / 2^{DOWNSAMPLINGS}"},
        "configurations": configurations,
    }


def get_configuration(plans: dict[str, Any], name: str) -> dict[str, Any]:
    """One configuration of the plans; the error lists the available ones."""
    try:
        return plans["configurations"][name]
    except KeyError:
        raise UnknownNameError(f"configuration {name!r} is not in the plans; available: "
                       f"{', '.join(plans['configurations'])}") from None
