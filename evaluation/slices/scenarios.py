"""The missing-slice protocol: which runs go missing, and the scores of a filled stack.

**Runs** (:func:`missing_runs`): for each missing length L (1, 2, 3 consecutive slices by default) and each
evaluation case of K slices, up to ``runs_per_case`` runs at evenly spaced *interior* starts 1 .. K - L - 1 (a
given slice on both sides, so that every baseline applies); the same runs for every method.

**Image quality** (:func:`slice_quality`), over the **filled slices only**, inside the in-plane field of view of an
imputation (the configuration's heart window centred on the image, ``planners.cardiac_preprocessing
.field_of_view``): the filled and the true stack are both mapped to [0, 1] by the true stack's own 0.5th and
99.5th percentiles (clipped), then

* 2D — PSNR (dB, data range 1) and SSIM (Gaussian window 11, sigma 1.5; ``codebrain_seg.metrics.slice_metrics``)
  of each filled slice, averaged over the run's slices;
* 3D — PSNR over all voxels of the filled slices together, and the 3D SSIM map (Gaussian 11^3,
  ``codebrain_seg.metrics.ssim_map_3d``, on the whole windowed stack, reflect-padded) averaged over the filled
  slices (stacks of 5 slices or fewer have no 3D SSIM: NaN).

SSIM is reported in [0, 1], as the paper's Table 3. FID and FVD need Inception / I3D weights that are not
available offline and are left out.

**Dice** (:func:`structure_dice`) of a segmentation against the ground truth per structure (LV cavity, RV cavity,
myocardium), on the filled slices and on the whole stack; a structure absent from both is 1, from one of them 0
(the project's BraTS convention, ``evaluation.segmentation.metrics``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from codebrain_seg.metrics import slice_metrics, ssim_map_3d

DEFAULT_LENGTHS = (1, 2, 3)
DEFAULT_RUNS_PER_CASE = 3
SSIM_HALF_WINDOW = 5


@dataclass(frozen=True)
class Run:
    """A run of missing slices of one case: ``length`` slices from ``start`` (0-based, the file's slice axis)."""

    length: int
    start: int

    @property
    def name(self) -> str:
        """``L2_s4``: 2 slices from slice 4."""
        return f"L{self.length}_s{self.start}"

    @property
    def slices(self) -> list[int]:
        """The missing slice indices."""
        return list(range(self.start, self.start + self.length))

    def flags(self, num_slices: int) -> np.ndarray:
        """``(num_slices,)`` bool, True on the run."""
        flags = np.zeros(num_slices, bool)
        flags[self.slices] = True
        return flags


def missing_runs(num_slices: int, length: int, runs_per_case: int = DEFAULT_RUNS_PER_CASE) -> list[Run]:
    """Up to ``runs_per_case`` runs of ``length`` slices at evenly spaced interior starts (module docstring)."""
    first, last = 1, num_slices - length - 1
    if last < first or runs_per_case < 1:
        return []
    count = min(int(runs_per_case), last - first + 1)
    starts = sorted({int(round(v)) for v in np.linspace(first, last, count)})
    return [Run(int(length), start) for start in starts]


def _normalise(volume: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((np.asarray(volume, np.float32) - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)


def _window_box(field_of_view: np.ndarray, axis: int) -> tuple[slice, slice]:
    plane = np.moveaxis(field_of_view, axis, -1).any(axis=-1)
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def slice_quality(filled: np.ndarray, truth: np.ndarray, missing: np.ndarray, axis: int,
                  field_of_view: np.ndarray) -> dict[str, float]:
    """``psnr_2d``, ``ssim_2d``, ``psnr_3d``, ``ssim_3d`` of the filled slices (module docstring)."""
    low, high = (float(v) for v in np.percentile(truth, (0.5, 99.5)))
    rows, cols = _window_box(field_of_view, axis)
    pred = np.moveaxis(_normalise(filled, low, high), axis, -1)[rows, cols]
    true = np.moveaxis(_normalise(truth, low, high), axis, -1)[rows, cols]
    flags = np.asarray(missing, dtype=bool)
    per_slice = slice_metrics(np.moveaxis(pred[..., flags], -1, 0), np.moveaxis(true[..., flags], -1, 0))
    mse = float(np.mean((pred[..., flags] - true[..., flags]) ** 2))
    psnr_3d = 100.0 if mse == 0 else min(100.0, 10.0 * np.log10(1.0 / mse))
    ssim_3d = float("nan")
    if min(pred.shape) > SSIM_HALF_WINDOW:
        ssim_3d = float(ssim_map_3d(pred, true)[..., flags].mean())
    return {"psnr_2d": float(per_slice["psnr"].mean()), "ssim_2d": float(per_slice["ssim"].mean()) / 100.0,
            "psnr_3d": float(psnr_3d), "ssim_3d": ssim_3d}


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty, 0 when one is."""
    predicted, true = np.asarray(prediction, bool), np.asarray(truth, bool)
    total = int(predicted.sum()) + int(true.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & true).sum()) / total


def structure_dice(prediction: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray], missing: np.ndarray,
                   axis: int) -> dict[str, float]:
    """``dice_<S>`` on the filled slices and ``dice_<S>_volume`` on the whole stack per structure S, and their means
    ``dice_mean`` / ``dice_volume_mean``; ``prediction`` / ``truth``: structure -> (X, Y, Z) bool."""
    flags = np.asarray(missing, dtype=bool)
    scores: dict[str, float] = {}
    for name in truth:
        scores[f"dice_{name}"] = dice(np.moveaxis(prediction[name], axis, -1)[..., flags],
                                      np.moveaxis(truth[name], axis, -1)[..., flags])
        scores[f"dice_{name}_volume"] = dice(prediction[name], truth[name])
    names = list(truth)
    scores["dice_mean"] = float(np.mean([scores[f"dice_{n}"] for n in names]))
    scores["dice_volume_mean"] = float(np.mean([scores[f"dice_{n}_volume"] for n in names]))
    return scores
