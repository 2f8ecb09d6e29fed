"""What the 2D and the 3D preprocessing share: reading a case, the brain-centred window, per-sequence normalisation.

Every sequence is scaled by its own upper brain percentile: ``clip(value / p_upper, 0, 1)`` inside the brain
(voxels non-zero in any given sequence), 0 outside; a missing sequence is all zero.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codebrain_seg.errors import InputError
from codebrain_seg.io import read_nifti
from codebrain_seg.raw_dataset import image_path


def crop_window(brain_box: list[list[int]], crop_size: Sequence[int], axes: Sequence[int]) -> list[int]:
    """Start of the window per axis of ``axes``: centred on the brain (may be negative: zero padding)."""
    starts = []
    for axis, size in zip(axes, crop_size):
        low, high = brain_box[axis]
        starts.append(int((low + high) // 2 - int(size) // 2))
    return starts


def extract_window(volume: np.ndarray, starts: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """Window of ``volume`` over its last ``len(sizes)`` axes, zero outside the volume."""
    lead = volume.ndim - len(sizes)
    out = np.zeros(volume.shape[:lead] + tuple(int(s) for s in sizes), dtype=volume.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for axis, (start, size) in enumerate(zip(starts, sizes)):
        length = volume.shape[lead + axis]
        lo, hi = max(start, 0), min(start + size, length)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def paste_window(window: np.ndarray, starts: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`extract_window`: ``window`` (lead axes + ``len(shape)`` axes) placed at ``starts`` in
    a zero array of spatial ``shape``, clipped to it."""
    lead = window.ndim - len(shape)
    full = np.zeros(window.shape[:lead] + tuple(int(s) for s in shape), dtype=window.dtype)
    dst, src = [slice(None)] * lead, [slice(None)] * lead
    for start, size, length in zip(starts, window.shape[lead:], shape):
        lo, hi = max(start, 0), min(start + size, int(length))
        if hi <= lo:
            return full
        dst.append(slice(lo, hi))
        src.append(slice(lo - start, hi - start))
    full[tuple(dst)] = window[tuple(src)]
    return full


def normalise(channel: np.ndarray, mask: np.ndarray, upper_percentile: float) -> tuple[np.ndarray, float]:
    """clip(value / p_upper, 0, 1) inside the brain, 0 outside; returns the image and p_upper."""
    inside = channel[mask]
    upper = float(np.percentile(inside, upper_percentile)) if inside.size else 0.0
    if upper <= 0:
        raise InputError(f"upper percentile {upper_percentile} inside the brain is {upper} (<= 0): "
                         "an all-zero or negative sequence cannot be normalised")
    scaled = np.clip(channel / upper, 0.0, 1.0).astype(np.float32)
    scaled[~mask] = 0.0
    return scaled, upper


def normalised_stack(canonical: np.ndarray, available: Sequence[bool], mask: np.ndarray,
                     upper_percentile: float) -> tuple[np.ndarray, list[float]]:
    """Every given channel normalised (:func:`normalise`), missing ones all zero; returns the stack and p_upper."""
    images, uppers = [], []
    for channel, flag in enumerate(available):
        if flag:
            image, upper = normalise(canonical[channel], mask, upper_percentile)
        else:
            image, upper = np.zeros(mask.shape, np.float32), 0.0
        images.append(image)
        uppers.append(upper)
    return np.stack(images), uppers


def read_case_volumes(raw_dir: Path, case_id: str, num_channels: int) -> list[Any]:
    """The case's channel volumes; InputError when one does not share the grid (shape, affine) of channel 0 or
    holds non-finite voxels."""
    volumes = [read_nifti(image_path(raw_dir, case_id, c)) for c in range(num_channels)]
    reference = volumes[0]
    for channel, volume in enumerate(volumes):
        if volume.data.shape != reference.data.shape or not np.allclose(volume.affine, reference.affine, atol=1e-3):
            offset = np.abs(np.asarray(volume.affine) - np.asarray(reference.affine)).max()
            raise InputError(f"case {case_id}: channel {channel} does not share the grid of channel 0 "
                             f"(shape {volume.data.shape} vs {reference.data.shape}, largest affine difference "
                             f"{offset:.4g})")
        if not np.isfinite(volume.data).all():
            raise InputError(f"case {case_id}: channel {channel} has non-finite voxels (NaN or inf)")
    return volumes
