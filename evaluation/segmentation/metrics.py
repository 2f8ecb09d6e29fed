"""BraTS tumour regions and their Dice / HD95 scores (MONAI metrics, BraTS conventions for empty regions).

Regions are built from the label maps, by default in the project's label meaning (0 background, 1 NCR, 2 ED,
3 ET), as in the BraTS challenges and nnU-Net's region-based BraTS setup (a segmenter with another label meaning is
scored through its own region definitions, ``evaluation.segmentation.label_mapping``):

* WT (whole tumour) = labels {1, 2, 3}
* TC (tumour core)  = labels {1, 3}
* ET (enhancing tumour) = label {3}

Scores per region, computed with MONAI (``DiceMetric``, ``HausdorffDistanceMetric(percentile=95)``) when both the
ground truth and the prediction hold the region. An empty region follows the BraTS convention (Menze et al.,
IEEE TMI 34:1993, 2015; BraTS 2021-2023 evaluation):

=====================  ==========  =========================================
ground truth / pred.   Dice        HD95
=====================  ==========  =========================================
both empty             1           0 mm
one of them empty      0           ``EMPTY_HD95_PENALTY_MM`` = 373.13 mm
both non-empty         MONAI       MONAI, in mm (voxel spacing applied)
=====================  ==========  =========================================

373.13 mm is the diagonal of the BraTS image box (240 x 240 x 155 voxels of 1 mm), the value the BraTS
organisers assign; it is used whatever the image size so that scores stay comparable with published ones.
HD95 is MONAI's symmetric variant: the larger of the two directed 95th percentiles of the distances between the
two region surfaces.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from codebrain_seg.errors import InputError

REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
REGION_NAMES = tuple(REGIONS)
# Diagonal of the 240 x 240 x 155 mm BraTS box: sqrt(240^2 + 240^2 + 155^2).
EMPTY_HD95_PENALTY_MM = 373.13


def brats_regions(label: np.ndarray, regions: Mapping[str, Sequence[int]] = REGIONS) -> np.ndarray:
    """Stack the WT, TC and ET masks of a label map.

    Args:
        label: (X, Y, Z) integer label map (default meaning: 0 background, 1 NCR, 2 ED, 3 ET).
        regions: WT/TC/ET -> the label values of that label map that make up the region
            (``evaluation.segmentation.label_mapping``: a segmenter's own label meaning).

    Returns:
        (3, X, Y, Z) bool array in ``REGION_NAMES`` order (WT, TC, ET).
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise InputError(f"expected a 3D label map, got shape {label.shape}")
    return np.stack([np.isin(label, regions[name]) for name in REGION_NAMES])


def region_scores(prediction: np.ndarray, ground_truth: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                  prediction_regions: Mapping[str, Sequence[int]] = REGIONS,
                  truth_regions: Mapping[str, Sequence[int]] = REGIONS) -> dict[str, dict[str, float]]:
    """Dice and HD95 (mm) of the WT, TC and ET regions of a predicted label map against the ground truth.

    Args:
        prediction: (X, Y, Z) label map written by the segmenter.
        ground_truth: (X, Y, Z) label map on the same grid.
        spacing: voxel size in mm along the three array axes.
        prediction_regions, truth_regions: the label values of each region in the two maps (default: the
            project's 1 NCR, 2 ED, 3 ET for both).

    Returns:
        ``{"WT": {"dice": d, "hd95": h}, "TC": {...}, "ET": {...}}`` with the module's empty-region conventions.
    """
    prediction, ground_truth = np.asarray(prediction), np.asarray(ground_truth)
    if prediction.shape != ground_truth.shape:
        raise InputError(f"prediction shape {prediction.shape} differs from ground truth shape {ground_truth.shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"spacing must be three positive sizes in mm, got {tuple(spacing)}")
    predicted = brats_regions(prediction, prediction_regions)
    true = brats_regions(ground_truth, truth_regions)
    return {name: mask_scores(predicted[index], true[index], spacing) for index, name in enumerate(REGION_NAMES)}


def mask_scores(prediction: np.ndarray, ground_truth: np.ndarray,
                spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """Dice and HD95 (mm) of one binary (X, Y, Z) mask against another, with the BraTS empty-mask conventions."""
    predicted_any, true_any = bool(prediction.any()), bool(ground_truth.any())
    if not predicted_any and not true_any:
        return {"dice": 1.0, "hd95": 0.0}
    if predicted_any != true_any:
        return {"dice": 0.0, "hd95": EMPTY_HD95_PENALTY_MM}
    y_pred = torch.from_numpy(np.ascontiguousarray(prediction, dtype=np.float32))[None, None]
    y_true = torch.from_numpy(np.ascontiguousarray(ground_truth, dtype=np.float32))[None, None]
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(y_pred, y_true)
    hausdorff = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about one of its own internal arguments on every call.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        hd95 = hausdorff(y_pred, y_true, spacing=[float(s) for s in spacing])
    return {"dice": float(dice.item()), "hd95": float(hd95.item())}
