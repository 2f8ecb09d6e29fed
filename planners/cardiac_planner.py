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

MISSING_SLICES_TASK = "missing_slices"
CARDIAC_KIND = "3d_cardiac_stack"
PAPER_CONFIGURATION = "3d_cardiac"
CPU_CONFIGURATION = "3d_cardiac_cpu"
HEART_MARGIN = 0.25  # fraction of the heart's extent added on each side of the largest box
DEFAULT_FIELD_OF_VIEW_MM = 240.0  # without any label: a square of this size around the image centre
PAPER_OPTIMISATION = {"stage1": {"iterations": 100_000, "global_batch": 64},
                      "stage2": {"iterations": 100_000, "global_batch": 64},
                      "vae_lr": 1e-4, "dit_lr": 5e-5, "ema_decay": 0.9999}
CPU_OPTIMISATION = {"stage1": {"iterations": 600, "batch_size": 4}, "stage2": {"iterations": 1500, "batch_size": 8},
                    "vae_lr": 1e-3, "dit_lr": 1e-3, "ema_decay": 0.99}


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
    optimisation = PAPER_OPTIMISATION if paper else CPU_OPTIMISATION
    network = config.to_dict()
    network["diffusion"]["ema_decay"] = optimisation["ema_decay"]
    target = list(config.stack_shape)
    return {
        "kind": CARDIAC_KIND,
        "method": "copedit",
        "data_identifier": f"{PLANS_NAME}_{name}",
        "default_preprocessing": False,
        "slice_axis": slice_axis,
        "in_plane_crop_mm": crop_mm,
        "crop_centre": "label box centre, else image centre",
        "target_size": target,
        "num_slabs": config.vae.num_modalities,
        "missing_pattern": "consecutive runs of 1..m-1 slabs at a random start",
        "network": network,
        "optimisation": {key: value for key, value in optimisation.items() if key != "ema_decay"},
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
            "ema_decay": "the paper's 0.9999" if paper else "0.99: the EMA must follow a run of ~1k iterations",
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
