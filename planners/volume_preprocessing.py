"""Preprocessing of the 3D-volume (CoPeDiT) configurations, and its exact inverse for inference.

Per case (``$codebrain_preprocessed/DatasetXXX_Name/<data_identifier>/``):

* ``CASE.npy``  float32 (C, X, Y, Z) at the configuration's ``target_size``: the closest canonical (RAS) voxel
  order; every sequence normalised as for the 2D configurations (``clip(value / p99.5, 0, 1)`` inside the brain
  = voxels non-zero in any sequence, 0 outside); the ``box_size`` window centred on the brain (zero outside the
  image); resized trilinearly to ``target_size``.
* ``CASE.json`` the geometry (window start and size, canonical and original shape, affine) and the per-sequence
  normalisation; written last, so a case without it is unfinished and redone by a rerun.

:func:`prepare_volume` is the in-memory twin used for inference (the brain mask then comes from the given
sequences only), :func:`restore_volume` maps a (C, X', Y', Z') result back onto the case's own grid.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from codebrain_seg.errors import InputError
from codebrain_seg.geometry import from_canonical, to_canonical
from codebrain_seg.io import write_json, write_npy
from codebrain_seg.plans import Plans
from planners.case_arrays import (
    crop_window,
    extract_window,
    normalised_stack,
    paste_window,
    read_case_volumes,
)
from planners.fingerprint import bounding_box, brain_mask

logger = logging.getLogger(__name__)

ALL_AXES = [0, 1, 2]


def resize_volume(volume: np.ndarray, size: Sequence[int], mode: str = "trilinear") -> np.ndarray:
    """Resize the last three axes of ``(C, X, Y, Z)`` to ``size`` (``'trilinear'`` or ``'nearest'``)."""
    size = tuple(int(s) for s in size)
    if volume.ndim != 4:
        raise InputError(f"resize_volume expects (C, X, Y, Z), got shape {volume.shape}")
    if tuple(volume.shape[1:]) == size:
        return np.asarray(volume, dtype=np.float32).copy()
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None]
    options = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(tensor, size=size, mode=mode, **options)[0].numpy()


def volume_box(mask: np.ndarray, box_size: Sequence[int], compression: int = 8) -> tuple[list[int], list[int]]:
    """``(start, size)`` per axis of the window centred on the brain; grown to the next multiple of
    ``compression`` on an axis where this brain is larger than the planned box (never seen in training)."""
    box = bounding_box(mask)
    sizes = []
    for axis, planned in enumerate(box_size):
        extent = box[axis][1] - box[axis][0]
        sizes.append(int(planned) if extent <= planned else int(math.ceil(extent / compression) * compression))
    if sizes != [int(s) for s in box_size]:
        logger.warning("brain extent %s exceeds the planned box %s: using %s",
                       [b[1] - b[0] for b in box], list(box_size), sizes)
    return crop_window(box, sizes, ALL_AXES), sizes


def prepare_volume(images: np.ndarray, available: Sequence[bool], affine: np.ndarray, plans: Mapping[str, Any],
                   configuration: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess a case in memory as the volume configuration's training data was preprocessed.

    Args:
        images: ``(C, X, Y, Z)`` in the file's voxel order; missing channels are ignored.
        available: C booleans, True = given.
        affine: ``(4, 4)`` voxel-to-world matrix of the files.
        plans: the plans (``normalization.upper_percentile``).
        configuration: a ``3d_volume`` configuration (``box_size``, ``target_size``).

    Returns:
        ``(volume (C, *target_size) float32 in [0, 1] with missing channels 0, brain (X, Y, Z) bool in canonical
        order, properties)``; ``properties`` is what :func:`restore_volume` needs.
    """
    available = np.asarray(available, dtype=bool)
    canonical = to_canonical(np.asarray(images, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    mask = brain_mask([canonical[c] for c in np.flatnonzero(available)])
    if not mask.any():
        raise InputError("the given sequences are zero everywhere: no brain to impute")
    compression = 2 ** len(configuration["network"]["vae"]["channels"])
    starts, sizes = volume_box(mask, configuration["box_size"], compression)
    upper_percentile = Plans(plans).upper_percentile
    stack, uppers = normalised_stack(canonical, available, mask, upper_percentile)
    window = extract_window(stack, starts, sizes)
    volume = np.clip(resize_volume(window, configuration["target_size"]), 0.0, 1.0).astype(np.float32)
    volume[~available] = 0.0
    properties = {
        "original_shape": list(np.asarray(images).shape[1:]),
        "original_affine": np.asarray(affine, dtype=np.float64).tolist(),
        "canonical_shape": list(canonical.shape[1:]),
        "box_start": starts,
        "box_size": sizes,
        "target_size": [int(s) for s in configuration["target_size"]],
        "normalization_upper": uppers,
        "upper_percentile": upper_percentile,
    }
    return volume, mask, properties


def restore_volume(volume: np.ndarray, properties: Mapping[str, Any], mask: np.ndarray | None = None,
                   denormalise: bool = True) -> np.ndarray:
    """Map ``(C, *target_size)`` back onto the original grid ``(C, X, Y, Z)`` (file voxel order).

    The volume is resized back to the box (trilinear), pasted into the canonical grid (zero outside the box, i.e.
    outside the field of view the model saw), multiplied by ``mask`` (canonical ``(X, Y, Z)``) when given,
    scaled by ``normalization_upper`` per channel when ``denormalise``, and put back in the file's voxel order.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if list(volume.shape[1:]) != list(properties["target_size"]):
        raise InputError(f"volume {volume.shape[1:]} does not have the target size {properties['target_size']}")
    window = resize_volume(volume, properties["box_size"])
    full = paste_window(window, properties["box_start"], [int(s) for s in properties["canonical_shape"]])
    if mask is not None:
        full *= np.asarray(mask, dtype=np.float32)[None]
    if denormalise:
        full *= np.asarray(properties["normalization_upper"], dtype=np.float32)[:, None, None, None]
    return from_canonical(full, np.asarray(properties["original_affine"]))


def preprocess_volume_case(raw_dir: Path, case_id: str, out_dir: Path, plans: Mapping[str, Any],
                           configuration: Mapping[str, Any]) -> dict[str, Any]:
    """Preprocess one case for a ``3d_volume`` configuration into ``out_dir`` (module docstring)."""
    volumes = read_case_volumes(raw_dir, case_id, len(plans["channel_names"]))
    reference = volumes[0]
    images = np.stack([item.data for item in volumes])
    volume, _, properties = prepare_volume(images, np.ones(len(volumes), bool), reference.affine, plans,
                                           configuration)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_npy(out_dir / f"{case_id}.npy", volume)
    properties = {"case_id": case_id, "channel_names": plans["channel_names"],
                  "original_spacing": list(reference.spacing), **properties, "has_label": False,
                  "preprocessed_shape": list(volume.shape)}
    write_json(out_dir / f"{case_id}.json", properties)
    return properties
