"""2D (CodeBrain) preprocessing: a case -> a cropped, normalised stack of slices, in memory or on disk, and back.

:func:`prepare_case` is the one pipeline: the closest canonical RAS voxel order; brain mask = voxels non-zero in any
given sequence; each given sequence divided by its own upper brain percentile and clipped to [0, 1], missing ones
zero; slices along the planned axis over the brain's extent; the planned in-plane crop centred on the brain.
:func:`preprocess_case` (training data, every sequence given) writes its result to disk; the predictor calls it on
a case with missing sequences. :func:`restore_to_original` is the exact inverse; :func:`to_preprocessed_space`
re-indexes any array on the case's grid (a label map, a prediction) into the stack's space.

On disk (``$codebrain_preprocessed/DatasetXXX_Name/<data_identifier>/``):

* ``CASE.npy``      float32 (C, S, H, W), values in [0, 1]; memory-mapped by the trainer to sample slices.
* ``CASE_seg.npy``  uint8 (S, H, W) label map, only when the case has labels.
* ``CASE.json``     properties: original geometry, the crop, the per-sequence normalisation, training slices.
                    Written last, so a case without it is unfinished and is redone by a rerun.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from codebrain_seg.errors import InputError
from codebrain_seg.geometry import from_canonical, to_canonical
from codebrain_seg.io import read_nifti, write_json, write_npy
from codebrain_seg.plans import Configuration, Plans
from codebrain_seg.raw_dataset import label_path
from planners.case_arrays import (
    crop_window,
    extract_window,
    normalised_stack,
    paste_window,
    read_case_volumes,
)
from planners.fingerprint import bounding_box, brain_mask

logger = logging.getLogger(__name__)


def enlarged_crop(box: list[list[int]], planned: Sequence[int], in_plane: Sequence[int], multiple: int) -> list[int]:
    """The planned crop, grown per axis to the next multiple of ``multiple`` that holds this brain's extent."""
    crop = []
    for axis, size in zip(in_plane, planned):
        extent = box[axis][1] - box[axis][0]
        crop.append(int(size) if extent <= size else int(math.ceil(extent / multiple) * multiple))
    return crop


def prepare_case(images: np.ndarray, available: Sequence[bool], affine: np.ndarray, plans: Mapping[str, Any],
                 configuration: Mapping[str, Any], case_id: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess a case in memory (module docstring).

    Args:
        images: ``(C, X, Y, Z)`` in the file's voxel order; missing channels are ignored (may be anything).
        available: C booleans, True = the sequence is given.
        affine: ``(4, 4)`` voxel-to-world matrix of the files.
        plans: the plans dict (``normalization.upper_percentile``).
        configuration: one configuration of the plans (slicing axis, crop, down-samplings).
        case_id: training data: the brain must fit the planned crop (InputError naming the case otherwise);
            None (inference): a larger brain enlarges the crop, with a warning.

    Returns:
        ``(stack (C, S, H, W) float32 in [0, 1] with missing channels 0, brain (S, H, W) bool, properties)``;
        ``properties`` has the keys :func:`restore_to_original` needs, ``normalization_upper`` 0 for missing
        channels.
    """
    available = np.asarray(available, dtype=bool)
    canonical = to_canonical(np.asarray(images, dtype=np.float32), affine)
    mask = brain_mask([canonical[c] for c in np.flatnonzero(available)])
    if not mask.any():
        raise InputError(f"{'case ' + case_id + ': ' if case_id else ''}the given sequences are zero everywhere: "
                         "no brain to impute")
    box = bounding_box(mask)
    axis = int(configuration["slicing_axis"])
    in_plane = [a for a in range(3) if a != axis]
    planned = [int(s) for s in configuration["crop_size"]]
    crop = enlarged_crop(box, planned, in_plane, 2 ** int(configuration.get("downsamplings", 3)))
    if crop != planned:
        extent = [box[a][1] - box[a][0] for a in in_plane]
        if case_id is not None:
            raise InputError(f"case {case_id}: brain extent {extent} exceeds the planned crop {planned}; re-plan "
                             "with this case in the fingerprint (codebrain_plan_and_preprocess --replan)")
        logger.warning("brain extent %s exceeds the planned crop %s: using %s (not seen in training)",
                       extent, planned, crop)
    starts = crop_window(box, crop, in_plane)
    upper_percentile = Plans(plans).upper_percentile
    normalised, uppers = normalised_stack(canonical, available, mask, upper_percentile)
    order = [axis] + in_plane  # (S, H, W) = slicing axis first
    s0, s1 = box[axis]
    stack = normalised.transpose([0] + [a + 1 for a in order])[:, s0:s1]
    stack = extract_window(stack, starts, crop).astype(np.float32)
    brain = extract_window(mask.transpose(order)[s0:s1], starts, crop)
    properties = {
        "original_shape": list(np.asarray(images).shape[1:]),
        "original_affine": np.asarray(affine, dtype=np.float64).tolist(),
        "canonical_shape": list(canonical.shape[1:]),
        "slicing_axis": axis,
        "axis_order": order,
        "slice_range": [int(s0), int(s1)],
        "crop_start": starts,
        "crop_size": crop,
        "normalization_upper": uppers,
        "upper_percentile": upper_percentile,
        "preprocessed_shape": list(stack.shape),
    }
    return stack, brain, properties


def to_preprocessed_space(volume: np.ndarray, properties: Mapping[str, Any]) -> np.ndarray:
    """Resample nothing, only re-index: ``(..., X, Y, Z)`` on the original grid -> ``(..., S, H, W)`` crop.

    The forward twin of :func:`restore_to_original` (without normalisation) for arrays on the case's grid, e.g. a
    prediction or a label map.
    """
    volume = np.asarray(volume)
    lead = volume.ndim - 3
    canonical = to_canonical(volume, np.asarray(properties["original_affine"]))
    order = [lead + a for a in properties["axis_order"]]
    s0, s1 = properties["slice_range"]
    moved = canonical.transpose(list(range(lead)) + order)[(slice(None),) * lead + (slice(s0, s1),)]
    return extract_window(moved, properties["crop_start"], properties["crop_size"])


def restore_to_original(volume: np.ndarray, properties: Mapping[str, Any], denormalise: bool = True) -> np.ndarray:
    """Map a preprocessed (C, S, H, W) array back onto the original voxel grid (C, X, Y, Z).

    Voxels outside the crop are 0. With ``denormalise`` each channel is multiplied by its p_upper, so values
    below it return to the original intensities.
    """
    volume = np.asarray(volume, dtype=np.float32)
    order = properties["axis_order"]
    canonical_shape = properties["canonical_shape"]
    s0, s1 = properties["slice_range"]
    in_plane_sizes = [canonical_shape[a] for a in order[1:]]
    window = paste_window(volume, properties["crop_start"], in_plane_sizes)
    full = np.zeros((volume.shape[0],) + tuple(canonical_shape[a] for a in order), dtype=np.float32)
    full[:, s0:s1] = window
    if denormalise:
        full *= np.asarray(properties["normalization_upper"], dtype=np.float32)[:, None, None, None]
    inverse_order = np.argsort(order)
    canonical = full.transpose([0] + [int(a) + 1 for a in inverse_order])
    return from_canonical(canonical, np.asarray(properties["original_affine"]))


def middle_slices(num_slices: int, count: int) -> np.ndarray:
    """Indices of the ``count`` middle slices of ``num_slices`` (all of them when there are fewer): the slices the
    paper protocol scores (the reference's BraTS slices 37..116 of 155)."""
    if count >= num_slices:
        return np.arange(num_slices)
    start = (num_slices - count) // 2
    return np.arange(start, start + count)


def training_slices(stack: np.ndarray, min_brain_fraction: float) -> list[int]:
    """Slices whose brain area is at least ``min_brain_fraction`` of the largest slice's (nearly empty edge slices
    teach nothing)."""
    brain_area = (stack > 0).any(axis=0).sum(axis=(1, 2))
    threshold = min_brain_fraction * brain_area.max()
    return np.flatnonzero(brain_area >= max(threshold, 1)).tolist()


def preprocess_case(raw_dir: Path, case_id: str, out_dir: Path, plans: Mapping[str, Any],
                    configuration: Mapping[str, Any]) -> dict[str, Any]:
    """Preprocess one training case (every sequence given) into ``out_dir`` (module docstring); its properties."""
    volumes = read_case_volumes(raw_dir, case_id, len(plans["channel_names"]))
    reference = volumes[0]
    images = np.stack([v.data for v in volumes])
    stack, _, properties = prepare_case(images, [True] * len(volumes), reference.affine, plans, configuration,
                                        case_id=case_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_npy(out_dir / f"{case_id}.npy", stack)
    has_label = label_path(raw_dir, case_id).is_file()
    if has_label:
        label = read_nifti(label_path(raw_dir, case_id), dtype=np.int16).data
        write_npy(out_dir / f"{case_id}_seg.npy", to_preprocessed_space(label, properties).astype(np.uint8))
    properties = {
        "case_id": case_id,
        "channel_names": plans["channel_names"],
        **properties,
        "original_shape": list(reference.data.shape),
        "original_spacing": list(reference.spacing),
        "training_slices": training_slices(stack, Configuration(configuration).min_brain_fraction),
        "has_label": has_label,
    }
    write_json(out_dir / f"{case_id}.json", properties)
    return properties
