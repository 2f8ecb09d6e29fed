"""Image-quality metrics (PSNR, SSIM, MAE) of imputed sequences, computed with MONAI's implementations.

The one place where these metrics are computed: training validation (``trainers``) and the evaluations
(``evaluation``) both call this module, so their figures cannot drift apart.

Two protocols (the CodeBrain reference implementation's evaluation and the BraSyn challenge):

* **paper** — per 2D slice, whole image, data range 1: PSNR (dB), SSIM x 100 (Gaussian window 11, sigma 1.5,
  k1 0.01, k2 0.03, valid window = no padding, as torchmetrics' default after its border crop), MAE x 1000.
  The caller clamps the prediction to [0, 1]; the ground truth is left as it is.
* **volume** — per 3D volume after 0.5-99.5 percentile normalisation of prediction and ground truth separately
  (:func:`percentile_normalise`); SSIM, PSNR and MAE averaged inside a region (brain, tumour, healthy brain).
  The 3D SSIM map is computed once per volume on the region's bounding box (reflect-padded by half a window, so
  every region voxel has a value) and averaged over the region's voxels.

A slice whose prediction equals the ground truth exactly has infinite PSNR; it is reported as
:data:`PSNR_CAP` (100 dB) so that means stay finite.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import MAEMetric, PSNRMetric, SSIMMetric
from monai.metrics.regression import compute_ssim_and_cs

from codebrain_seg.errors import InputError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 1.0
SSIM_SCALE = 100.0
MAE_SCALE = 1000.0
PSNR_CAP = 100.0
VOLUME_PERCENTILES = (0.5, 99.5)
METRIC_NAMES = ("psnr", "ssim", "mae")


def _as_batch(images: np.ndarray | torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """``(N, *spatial)`` or ``(*spatial)`` array -> float32 tensor ``(N, 1, *spatial)``."""
    tensor = torch.as_tensor(np.asarray(images, dtype=np.float32) if isinstance(images, np.ndarray) else images)
    tensor = tensor.float()
    if tensor.dim() == spatial_dims:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != spatial_dims + 1:
        raise InputError(f"expected (N, {', '.join('HWD'[:spatial_dims])}) images, got shape {tuple(tensor.shape)}")
    return tensor.unsqueeze(1)


def _cap_psnr(values: torch.Tensor) -> np.ndarray:
    return np.minimum(values.detach().cpu().numpy().astype(np.float64).reshape(-1), PSNR_CAP)


def slice_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Paper-protocol metrics per 2D slice.

    Args:
        prediction: ``(N, H, W)`` imputed slices (already clamped to [0, 1] by the protocol).
        target: ``(N, H, W)`` ground-truth slices in [0, 1].

    Returns:
        ``{"psnr": (N,), "ssim": (N,), "mae": (N,)}`` float64: PSNR in dB (data range 1), SSIM x 100, MAE x 1000.
    """
    pred, true = _as_batch(prediction, 2), _as_batch(target, 2)
    if pred.shape != true.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and target {tuple(true.shape)} differ in shape")
    if min(pred.shape[2:]) < SSIM_WINDOW:
        raise InputError(f"slices must be at least {SSIM_WINDOW} pixels wide for SSIM, got {tuple(pred.shape[2:])}")
    psnr, ssim = slice_psnr_ssim(pred, true)
    mae = MAEMetric(reduction="none")(pred, true)
    return {
        "psnr": psnr.detach().cpu().numpy().astype(np.float64),
        "ssim": ssim.detach().cpu().numpy().astype(np.float64) * SSIM_SCALE,
        "mae": mae.detach().cpu().numpy().astype(np.float64).reshape(-1) * MAE_SCALE,
    }


def slice_psnr_ssim(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR (dB, capped at :data:`PSNR_CAP`) and SSIM (0..1) per slice of ``(N, 1, H, W)`` tensors, data range 1.

    The paper protocol's window (Gaussian 11, sigma 1.5); the caller clamps the prediction. Returns two ``(N,)``
    float32 tensors (training validation averages them; :func:`slice_metrics` scales them for the tables).
    """
    prediction, target = prediction.float().contiguous(), target.float().contiguous()
    psnr = PSNRMetric(max_val=DATA_RANGE, reduction="none")(prediction, target).flatten()
    ssim = SSIMMetric(spatial_dims=2, data_range=DATA_RANGE, kernel_type="gaussian", win_size=SSIM_WINDOW,
                      kernel_sigma=SSIM_SIGMA, k1=SSIM_K1, k2=SSIM_K2, reduction="none")(prediction, target).flatten()
    # Identical images give an infinite PSNR; the cap keeps the means finite.
    return torch.nan_to_num(psnr, posinf=PSNR_CAP).clamp(max=PSNR_CAP), ssim


def volume_psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, data range 1) per volume of ``(..., X, Y, Z)`` tensors, capped at :data:`PSNR_CAP`."""
    mse = (prediction.float() - target.float()).pow(2).flatten(-3).mean(-1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp(max=PSNR_CAP)


def volume_ssim(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean 3D SSIM (Gaussian 11^3, :func:`ssim_map_3d`) of one ``(X, Y, Z)`` pair."""
    return float(ssim_map_3d(prediction.float().cpu().numpy(), target.float().cpu().numpy()).mean())


def percentile_normalise(volume: np.ndarray, mask: np.ndarray,
                         percentiles: tuple[float, float] = VOLUME_PERCENTILES) -> np.ndarray:
    """BraSyn-style scaling: ``clip((v - p_low) / (p_high - p_low), 0, 1)`` with percentiles inside ``mask``.

    Voxels outside ``mask`` become 0. A volume that is constant inside the mask (e.g. zero-fill) becomes 0.
    """
    volume = np.asarray(volume, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if volume.shape != mask.shape:
        raise InputError(f"volume {volume.shape} and mask {mask.shape} differ in shape")
    out = np.zeros_like(volume)
    if not mask.any():
        return out
    low, high = np.percentile(volume[mask], percentiles)
    if high > low:
        out = np.clip((volume - low) / (high - low), 0.0, 1.0).astype(np.float32)
        out[~mask] = 0.0
    return out


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        slices.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(slices)


def ssim_map_3d(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Local 3D SSIM (MONAI ``compute_ssim_and_cs``, Gaussian 11^3, sigma 1.5) at every voxel of the input.

    Inputs are reflect-padded by half a window first, so the map has the input's shape ``(X, Y, Z)``.
    Every axis must be longer than half a window (5 voxels).
    """
    half = SSIM_WINDOW // 2
    if min(prediction.shape) <= half:
        raise InputError(f"3D SSIM needs every axis longer than {half} voxels, got {prediction.shape}")
    pad = (half,) * 6
    pred = F.pad(torch.as_tensor(prediction, dtype=torch.float32)[None, None], pad, mode="reflect")
    true = F.pad(torch.as_tensor(target, dtype=torch.float32)[None, None], pad, mode="reflect")
    ssim, _ = compute_ssim_and_cs(pred, true, spatial_dims=3, kernel_size=[SSIM_WINDOW] * 3,
                                  kernel_sigma=[SSIM_SIGMA] * 3, data_range=DATA_RANGE, kernel_type="gaussian",
                                  k1=SSIM_K1, k2=SSIM_K2)
    return ssim[0, 0].numpy()


def region_metrics(prediction: np.ndarray, target: np.ndarray,
                   regions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Volume-protocol metrics of one normalised volume pair inside each region.

    Args:
        prediction: ``(X, Y, Z)`` in [0, 1] (see :func:`percentile_normalise`).
        target: ``(X, Y, Z)`` in [0, 1].
        regions: name -> boolean mask ``(X, Y, Z)``; empty regions are skipped. The first region should contain
            the others (the brain): the SSIM map is computed once on its bounding box.

    Returns:
        name -> ``{"psnr", "ssim" (x100), "mae" (x1000), "voxels"}``.
    """
    if prediction.shape != target.shape:
        raise InputError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
    union = np.zeros(target.shape, dtype=bool)
    for mask in regions.values():
        union |= mask
    results: dict[str, dict[str, float]] = {}
    if not union.any():
        return results
    box = _bounding_box(union, SSIM_WINDOW // 2)
    ssim = ssim_map_3d(prediction[box], target[box])
    psnr_metric = PSNRMetric(max_val=DATA_RANGE, reduction="none")
    mae_metric = MAEMetric(reduction="none")
    for name, mask in regions.items():
        if not mask.any():
            continue
        inside_pred = torch.as_tensor(prediction[mask], dtype=torch.float32)[None, None]
        inside_true = torch.as_tensor(target[mask], dtype=torch.float32)[None, None]
        results[name] = {
            "psnr": float(_cap_psnr(psnr_metric(inside_pred, inside_true))[0]),
            "ssim": float(ssim[mask[box]].mean()) * SSIM_SCALE,
            "mae": float(mae_metric(inside_pred, inside_true).item()) * MAE_SCALE,
            "voxels": int(mask.sum()),
        }
    return results


def volume_metrics(prediction: np.ndarray, target: np.ndarray, brain: np.ndarray,
                   label: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Volume protocol for one imputed sequence: normalise both, score brain, tumour and healthy brain.

    Args:
        prediction: ``(X, Y, Z)`` imputed sequence in any intensity scale.
        target: ``(X, Y, Z)`` ground truth in its original intensities.
        brain: boolean brain mask ``(X, Y, Z)`` (voxels non-zero in any ground-truth sequence).
        label: optional label map ``(X, Y, Z)``; tumour = ``label > 0`` inside the brain.

    Returns:
        region name (``brain``, and with labels ``tumour``, ``healthy``) -> metrics, see :func:`region_metrics`.
    """
    brain = np.asarray(brain, dtype=bool)
    regions = {"brain": brain}
    if label is not None:
        tumour = brain & (np.asarray(label) > 0)
        regions["tumour"] = tumour
        regions["healthy"] = brain & ~tumour
    return region_metrics(percentile_normalise(prediction, brain), percentile_normalise(target, brain), regions)


def calibrated_brain_psnr(prediction: np.ndarray, target: np.ndarray, brain: np.ndarray) -> float:
    """PSNR (dB, data range 1) over the brain of a prediction calibrated onto the ground truth: the quality of the
    *shape* of the intensities, free of a global gain and offset (the protocol by which issue 16 compares this
    project with the reference implementation at equal training minutes).

    The ground truth is scaled by its own 0.5-99.5 brain percentiles (:func:`percentile_normalise`, clipped to
    [0, 1]); the prediction is mapped onto it by one least-squares affine fit ``a * prediction + b`` over the brain
    voxels; the PSNR is over the brain voxels only.

    Args:
        prediction, target: one 3D volume each, same shape ``(H, W, D)``, any intensity unit.
        brain: bool mask of that shape (e.g. voxels non-zero in any given sequence).
    """
    if prediction.shape != target.shape or brain.shape != target.shape:
        raise InputError(f"prediction {prediction.shape}, target {target.shape} and brain {brain.shape} must have "
                         "one shape")
    if not brain.any():
        raise InputError("the brain mask is empty: no voxel to score")
    reference = percentile_normalise(target, brain)[brain].astype(np.float64)
    values = prediction[brain].astype(np.float64)
    design = np.stack([values, np.ones_like(values)], axis=1)
    (gain, offset), *_ = np.linalg.lstsq(design, reference, rcond=None)
    mse = float(np.mean((gain * values + offset - reference) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10.0 * float(np.log10(DATA_RANGE ** 2 / mse)))
