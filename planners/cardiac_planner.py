"""Plans of a missing-slice (cardiac short-axis cine) dataset: CoPeDiT's cardiac configurations from the fingerprint.

Used by :func:`planners.experiment_planner.plan_experiment` when the fingerprint carries ``task: missing_slices``
(dataset.json of ``codebrain_convert_cardiac``). One channel, so there are no 2D CodeBrain configurations; two
configurations of the shared CoPeDiT networks with ``elements='slices'`` (``codebrain_seg.networks.copedit.cardiac``):

* ``3d_cardiac`` — the paper: stacks resized to 192 x 192 x 32, CoPeVAE-C + MDiT3D-C (Tables 14-15);
* ``3d_cardiac_cpu`` — 64 x 64 x 16 stacks and the CPU preset.

Every value comes with its reason: the slice axis (the thick one), the in-plane crop around the heart (the
largest labelled extent in mm, with a margin, centred on each case's label box; the image centre for a case
without labels), the slice-axis handling and the intensity normalisation.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit.cardiac import cpu_cardiac_config, paper_cardiac_config
from codebrain_seg.plans import PLANS_NAME, PLANS_VERSION
from planners.copedit_planner import (
    AUGMENTATION,
    CPU_EXTRA_PATTERNS,
    CPU_PRETEXT_WEIGHT,
    PAPER_WARMUP,
    WARMUP_FRACTION_CPU,
    warmup_cosine,
)

MISSING_SLICES_TASK = "missing_slices"
CARDIAC_KIND = "3d_cardiac_stack"
PAPER_CONFIGURATION = "3d_cardiac"
CPU_CONFIGURATION = "3d_cardiac_cpu"
HEART_MARGIN = 0.25  # fraction of the heart's extent added on each side of the largest box
DEFAULT_FIELD_OF_VIEW_MM = 240.0  # without any label: a square of this size around the image centre
PAPER_STAGES = {"stage1": {"iterations": 100_000, "batch_size": 16, "global_batch": 64},
                "stage2": {"iterations": 100_000, "batch_size": 16, "global_batch": 64}}
CPU_STAGES = {"stage1": {"iterations": 600, "batch_size": 4}, "stage2": {"iterations": 1500, "batch_size": 8}}
PAPER_EMA_DECAY, CPU_EMA_DECAY = 0.9999, 0.99
# Training augmentation: the brain CoPeDiT's, and a flip of the slice axis reverses the slab order with it (the
# stack is flipped, not each slab on its own); quarter turns stay in-plane.
CARDIAC_AUGMENTATION = {**AUGMENTATION, "flip_reverses_slabs": True}


def _optimisation(paper: bool) -> dict[str, Any]:
    """The optimisation block of a cardiac configuration (the brain CoPeDiT's layout and rules)."""
    stages = {name: dict(stage) for name, stage in (PAPER_STAGES if paper else CPU_STAGES).items()}
    common = {"gradient_clip": 1.0, "loss": {"lambda_missing": 1.0, "lambda_available": 1.0},
              "augmentation": dict(CARDIAC_AUGMENTATION)}
    if paper:
        return {**stages,
                "vae_optimizer": warmup_cosine(1e-4, PAPER_WARMUP, 1e-6, (0.9, 0.999), 0.0, "Adam"),
                "discriminator_optimizer": warmup_cosine(1e-4, PAPER_WARMUP, 1e-6, (0.9, 0.999), 0.0, "Adam"),
                "dit_optimizer": warmup_cosine(5e-5, PAPER_WARMUP, 1e-6, (0.9, 0.999), 0.0, "AdamW"), **common}
    warm1 = int(WARMUP_FRACTION_CPU * stages["stage1"]["iterations"])
    warm2 = int(WARMUP_FRACTION_CPU * stages["stage2"]["iterations"])
    return {**stages,
            "vae_optimizer": warmup_cosine(1e-3, warm1, 1e-4, (0.9, 0.999), 0.0, "Adam"),
            "discriminator_optimizer": warmup_cosine(1e-3, warm1, 1e-4, (0.5, 0.9), 0.0, "Adam"),
            "dit_optimizer": warmup_cosine(1e-3, warm2, 1e-5, (0.9, 0.999), 0.0, "AdamW"),
            "codebook_restart": {"every": 10, "threshold": 0.01, "until": 0.8},
            "pretext_patterns_per_case": CPU_EXTRA_PATTERNS, **common}


def is_missing_slices(fingerprint: dict[str, Any]) -> bool:
    """True when the fingerprint is of a missing-slice dataset."""
    return fingerprint.get("task") == MISSING_SLICES_TASK


def decide_slice_axis(fingerprint: dict[str, Any]) -> tuple[int, str]:
    """The canonical axis with the largest median spacing: the short-axis stack's slice direction."""
    spacings = np.array([case["spacing"] for case in fingerprint["cases"]], dtype=float)
    median = np.median(spacings, axis=0)
    axis = int(np.argmax(median))
    others = [a for a in range(3) if a != axis]
    if median[axis] < 1.5 * max(median[a] for a in others):
        raise InputError(f"no thick slice axis: median spacing {median.round(3).tolist()} mm; a missing-slice dataset "
                         "needs 2D multi-slice stacks (slices at least 1.5x thicker than the in-plane spacing)")
    per_case = {int(np.argmax(row)) for row in spacings}
    if per_case != {axis}:
        raise InputError(f"the thickest axis differs between cases ({sorted(per_case)}); reorient the stacks first")
    return axis, (f"canonical axis {axis} has the largest spacing in every case (median {median[axis]:.3g} mm "
                  f"against {median[others[0]]:.3g} / {median[others[1]]:.3g} mm in-plane): the slice direction")


def decide_heart_crop(fingerprint: dict[str, Any], slice_axis: int) -> tuple[float, str]:
    """Square in-plane field of view (mm) around the heart, from the labelled cases' boxes."""
    in_plane = [a for a in range(3) if a != slice_axis]
    extents = []
    for case in fingerprint["cases"]:
        box = case.get("label_bbox")
        if box:
            extents.append(max((box[a][1] - box[a][0]) * case["spacing"][a] for a in in_plane))
    if not extents:
        return DEFAULT_FIELD_OF_VIEW_MM, (f"no case has labels: a {DEFAULT_FIELD_OF_VIEW_MM:g} mm square around the "
                                          "image centre (the heart sits near the centre of a short-axis scan)")
    largest = max(extents)
    side = float(math.ceil(largest * (1 + 2 * HEART_MARGIN)))
    return side, (f"largest in-plane extent of the labelled heart over {len(extents)} labelled case(s) is "
                  f"{largest:.1f} mm; with {HEART_MARGIN:.0%} margin on each side: a {side:g} mm square, centred "
                  "on each case's label box (on the image centre for a case without labels), zero-padded where "
                  "it leaves the image")


def _slice_reason(fingerprint: dict[str, Any], slice_axis: int, depth: int, paper: bool) -> str:
    counts = [case["shape"][slice_axis] for case in fingerprint["cases"]]
    spacing = np.median([case["spacing"][slice_axis] for case in fingerprint["cases"]])
    native = (f"the stacks have {min(counts)}-{max(counts)} slices (median {np.median(counts):g}) of "
              f"{spacing:.3g} mm")
    if paper:
        return (f"all slices, resized (linear) to {depth} as in the paper (UK Biobank stacks); {native}, so this "
                f"interpolates up to {depth / min(counts):.1f}x through-plane; 4 slabs of {depth // 4} slices are the "
                "missing-set elements")
    return (f"all slices, resized (linear) to {depth}: {native}; {depth} keeps the resize near the native count "
            f"(at most {depth / min(counts):.1f}x, against {32 / min(counts):.1f}x for the paper's 32) and halves "
            f"the cost; 4 slabs of {depth // 4} slices (about {np.median(counts) / 4:.1f} native slices) are the "
            "missing-set elements")


def _configuration(name: str, fingerprint: dict[str, Any], slice_axis: int, crop_mm: float, crop_reason: str,
                   paper: bool) -> dict[str, Any]:
    config = paper_cardiac_config() if paper else cpu_cardiac_config()
    network = config.to_dict()
    network["diffusion"]["ema_decay"] = PAPER_EMA_DECAY if paper else CPU_EMA_DECAY
    if not paper:
        # the brain CPU configuration's reasons hold here too (a run of minutes; the number of given slabs must be
        # linear in the prompt for the count head to leave chance)
        network["vae"]["pretext_weight"] = CPU_PRETEXT_WEIGHT
        network["vae"]["prompt_pooling"] = "sum"
    target = list(config.stack_shape)
    return {
        "kind": CARDIAC_KIND,
        "method": "copedit",
        "data_identifier": f"{PLANS_NAME}_{name}",
        "default_preprocessing": False,
        "slice_axis": slice_axis,
        "in_plane_crop_mm": crop_mm,
        "crop_centre": "label box centre, else image centre",
        "inference_crop_centre": "image centre (an incomplete case to impute has no labels)",
        "target_size": target,
        "num_slabs": config.vae.num_modalities,
        "missing_pattern": "consecutive runs of 1..m-1 slabs at a random start",
        "network": network,
        "optimisation": _optimisation(paper),
        "reasons": {
            "slice_axis": "see the plans' reasons",
            "in_plane_crop_mm": crop_reason,
            "target_size": _slice_reason(fingerprint, slice_axis, target[2], paper),
            "network": ("CoPeVAE-C (channels 32/64/128, codebook 8192 x 8, compression 8) + MDiT3D-C (width 576, "
                        "12 blocks, 12 heads, patch 1, 33.0 M), Tables 14-15; slabs encoded one by one"
                        if paper else "the cardiac CPU preset: VQVAE 16/32 (compression 4), MDiT3D width 96, "
                                      "depth 4, 3 heads, the same Planar / Spatial structure"),
            "iterations": ("the paper's 100k CoPeVAE-C and 100k MDiT3D-C iterations, global batch 64" if paper else
                           "the brain CPU configuration's budget (minutes per stage on two cores)"),
            "batch_size": ("16 stacks per rank: the paper's global batch 64 on 4 ranks (4 A100 in the paper)"
                           if paper else "4 stacks for CoPeVAE (the contrastive task needs other cases as "
                                         "negatives), 8 cached latent stacks for MDiT3D"),
            "optimisers": ("the paper's Adam 1e-4 (CoPeVAE-C) and AdamW 5e-5 (MDiT3D-C), warmup-cosine per "
                           "iteration with a 1k-iteration warmup" if paper else
                           "as the brain CPU configuration: 10x the paper's learning rates, 5 % warmup, cosine "
                           "to a tenth / a hundredth; codebook restarts and 16 extra pretext patterns per case"),
            "augmentation": ("the brain CoPeDiT's flips, in-plane quarter turns and intensity scale / shift; a flip "
                             "of the slice axis reverses the stack (slab order and slices within each slab)"),
            "ema_decay": "the paper's 0.9999" if paper else "0.99: the EMA must follow a run of ~1k iterations",
            **({} if paper else {
                "pretext_weight": f"{CPU_PRETEXT_WEIGHT:g} instead of the paper's 0.01 (as the brain CPU "
                                  "configuration: a run of minutes)",
                "prompt_pooling": "sum of the given slabs' prompt tokens (as the brain CPU configuration: the number "
                                  "of given slabs is then linear in the prompt)"}),
            "normalization": "per volume, 0.5-99.5 percentiles of the given slices to [0, 1] (clipped); the "
                             "inverse x (p99.5 - p0.5) + p0.5 maps a filled slice back to the case's intensities",
        },
    }


def plan_cardiac_experiment(fingerprint: dict[str, Any], dataset_name: str) -> dict[str, Any]:
    """The plans of a missing-slice dataset (module docstring)."""
    if len(fingerprint["channel_names"]) != 1:
        raise InputError(f"a missing-slice dataset has one channel, got {fingerprint['channel_names']}")
    axis, axis_reason = decide_slice_axis(fingerprint)
    crop_mm, crop_reason = decide_heart_crop(fingerprint, axis)
    configurations = {name: _configuration(name, fingerprint, axis, crop_mm, crop_reason, paper)
                      for name, paper in ((PAPER_CONFIGURATION, True), (CPU_CONFIGURATION, False))}
    return {
        "plans_name": PLANS_NAME,
        "plans_version": PLANS_VERSION,
        "dataset_name": dataset_name,
        "task": MISSING_SLICES_TASK,
        "channel_names": fingerprint["channel_names"],
        "original_median_shape": fingerprint["median_shape"],
        "original_median_spacing": fingerprint["median_spacing"],
        "voxel_order": "closest canonical RAS (nibabel); mapped back to each file's own order on output",
        "normalization": {
            "scheme": "per volume: (value - p0.5) / (p99.5 - p0.5), clipped to [0, 1]",
            "reason": "the paper's 0.5-99.5 percentile scaling; per volume because the sources' intensity types "
                      "differ (ACDC int16 scanner units and float32 already in [0, 255], M&Ms float64)",
        },
        "reasons": {"slice_axis": axis_reason, "in_plane_crop_mm": crop_reason},
        "configurations": configurations,
    }
