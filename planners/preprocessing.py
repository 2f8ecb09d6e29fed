"""Preprocessing: one raw case -> one cropped, normalised volume on disk, plus what maps it back.

Per case and data identifier (``$codebrain_preprocessed/DatasetXXX_Name/<data_identifier>/``):

* ``CASE.npy``      float32 (C, S, H, W): S slices along the slicing axis (brain extent only), H x W the
                    in-plane crop, values in [0, 1]; memory-mapped by the trainer to sample slices.
* ``CASE_seg.npy``  uint8 (S, H, W) label map, only when the case has labels.
* ``CASE.json``     properties: original geometry, the crop, the per-sequence normalisation, training slices.
                    Written last, so a case without it is unfinished and is redone by a rerun.
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from codebrain_seg.geometry import from_canonical, to_canonical
from codebrain_seg.io import read_json, read_nifti, write_json, write_npy
from codebrain_seg.raw_dataset import image_path, label_path, list_cases
from planners.fingerprint import bounding_box, brain_mask

logger = logging.getLogger(__name__)


def crop_window(brain_box: list[list[int]], crop_size: list[int], in_plane: list[int]) -> list[int]:
    """Start of the in-plane crop per in-plane axis: centred on the brain (may be negative: zero padding)."""
    starts = []
    for axis, size in zip(in_plane, crop_size):
        low, high = brain_box[axis]
        starts.append(int((low + high) // 2 - size // 2))
    return starts


def _extract(volume: np.ndarray, starts: list[int], sizes: list[int]) -> np.ndarray:
    """Window of ``volume`` over its last len(sizes) axes, zero outside the volume."""
    lead = volume.ndim - len(sizes)
    out = np.zeros(volume.shape[:lead] + tuple(sizes), dtype=volume.dtype)
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


def normalise(channel: np.ndarray, mask: np.ndarray, upper_percentile: float) -> tuple[np.ndarray, float]:
    """clip(value / p_upper, 0, 1) inside the brain, 0 outside; returns the image and p_upper."""
    inside = channel[mask]
    upper = float(np.percentile(inside, upper_percentile)) if inside.size else 0.0
    if upper <= 0:
        raise ValueError(f"upper percentile {upper_percentile} inside the brain is {upper} (<= 0): "
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
    """The case's channel volumes; raises when one does not share the grid (shape, affine) of channel 0."""
    volumes = [read_nifti(image_path(raw_dir, case_id, c)) for c in range(num_channels)]
    reference = volumes[0]
    for channel, volume in enumerate(volumes[1:], start=1):
        if volume.data.shape != reference.data.shape or not np.allclose(volume.affine, reference.affine, atol=1e-3):
            raise ValueError(f"case {case_id}: channel {channel} does not share the grid of channel 0 "
                             f"(shape {volume.data.shape} vs {reference.data.shape})")
    return volumes


def preprocess_case(raw_dir: Path, case_id: str, out_dir: Path, plans: dict[str, Any],
                    configuration: dict[str, Any]) -> dict[str, Any]:
    """Preprocess one case into ``out_dir`` (see module docstring); returns its properties."""
    volumes = read_case_volumes(raw_dir, case_id, len(plans["channel_names"]))
    reference = volumes[0]
    canonical = np.stack([to_canonical(v.data, reference.affine) for v in volumes])
    if not np.isfinite(canonical).all():
        raise ValueError(f"case {case_id}: non-finite voxels (NaN or inf)")
    mask = brain_mask(list(canonical))
    box = bounding_box(mask)
    axis = configuration["slicing_axis"]
    in_plane = [a for a in range(3) if a != axis]
    crop = configuration["crop_size"]
    starts = crop_window(box, crop, in_plane)
    for a, start, size in zip(in_plane, starts, crop):
        if box[a][0] < start or box[a][1] > start + size:
            raise ValueError(f"case {case_id}: brain extent {box[a]} on axis {a} exceeds the planned crop "
                             f"{size}; re-plan with this case in the fingerprint")

    upper_percentile = plans["normalization"]["upper_percentile"]
    normalised, uppers = normalised_stack(canonical, [True] * len(canonical), mask, upper_percentile)

    slice_range = box[axis]
    order = [axis] + in_plane  # (S, H, W) = slicing axis first
    stack = normalised.transpose([0] + [a + 1 for a in order])[:, slice_range[0]:slice_range[1]]
    stack = _extract(stack, starts, crop)
    brain_area = (stack > 0).any(axis=0).sum(axis=(1, 2))
    threshold = configuration["training_slices"]["min_brain_fraction"] * brain_area.max()
    training_slices = np.flatnonzero(brain_area >= max(threshold, 1)).tolist()

    out_dir.mkdir(parents=True, exist_ok=True)
    write_npy(out_dir / f"{case_id}.npy", stack.astype(np.float32))
    has_label = label_path(raw_dir, case_id).is_file()
    if has_label:
        label = read_nifti(label_path(raw_dir, case_id), dtype=np.int16).data
        label = to_canonical(label, reference.affine).transpose(order)[slice_range[0]:slice_range[1]]
        write_npy(out_dir / f"{case_id}_seg.npy", _extract(label, starts, crop).astype(np.uint8))
    properties = {
        "case_id": case_id,
        "channel_names": plans["channel_names"],
        "original_shape": list(reference.data.shape),
        "original_affine": reference.affine.tolist(),
        "original_spacing": list(reference.spacing),
        "canonical_shape": list(canonical.shape[1:]),
        "slicing_axis": axis,
        "axis_order": order,
        "slice_range": slice_range,
        "crop_start": starts,
        "crop_size": crop,
        "normalization_upper": uppers,
        "upper_percentile": upper_percentile,
        "training_slices": training_slices,
        "has_label": has_label,
        "preprocessed_shape": list(stack.shape),
    }
    write_json(out_dir / f"{case_id}.json", properties)
    return properties


def restore_to_original(volume: np.ndarray, properties: dict[str, Any], denormalise: bool = True) -> np.ndarray:
    """Map a preprocessed (C, S, H, W) array back onto the original voxel grid (C, X, Y, Z).

    Voxels outside the crop are 0. With ``denormalise`` each channel is multiplied by its p_upper, so values
    below it return to the original intensities.
    """
    volume = np.asarray(volume, dtype=np.float32)
    channels = volume.shape[0]
    order = properties["axis_order"]
    canonical_shape = properties["canonical_shape"]
    full = np.zeros((channels,) + tuple(canonical_shape[a] for a in order), dtype=np.float32)
    s0, s1 = properties["slice_range"]
    in_plane_sizes = [canonical_shape[a] for a in order[1:]]
    window = np.zeros((channels, s1 - s0) + tuple(in_plane_sizes), dtype=np.float32)
    # Paste the crop back: the inverse of _extract, clipped to the volume.
    dst, src = [slice(None), slice(None)], [slice(None), slice(None)]
    for start, size, length in zip(properties["crop_start"], properties["crop_size"], in_plane_sizes):
        lo, hi = max(start, 0), min(start + size, length)
        dst.append(slice(lo, hi))
        src.append(slice(lo - start, hi - start))
    window[tuple(dst)] = volume[tuple(src)]
    full[:, s0:s1] = window
    if denormalise:
        full *= np.asarray(properties["normalization_upper"], dtype=np.float32)[:, None, None, None]
    inverse_order = np.argsort(order)
    canonical = full.transpose([0] + [int(a) + 1 for a in inverse_order])
    return from_canonical(canonical, np.asarray(properties["original_affine"]))


def is_case_done(out_dir: Path, case_id: str) -> bool:
    """A case is finished when its properties file (written last) exists and names its arrays."""
    props = out_dir / f"{case_id}.json"
    if not props.is_file() or not (out_dir / f"{case_id}.npy").is_file():
        return False
    try:
        properties = read_json(props)
    except ValueError:
        return False
    return not properties.get("has_label") or (out_dir / f"{case_id}_seg.npy").is_file()


def preprocess_dataset(raw_dir: Path, preprocessed_dir: Path, plans: dict[str, Any], configuration_name: str,
                       num_processes: int = 1) -> list[str]:
    """Preprocess every case of a raw dataset for one configuration; finished cases are skipped."""
    configuration = plans["configurations"][configuration_name]
    out_dir = preprocessed_dir / configuration["data_identifier"]
    worker = preprocess_case
    if configuration.get("kind") == "3d_volume":  # CoPeDiT: whole resized volumes instead of slice stacks
        from planners.volume_preprocessing import preprocess_volume_case as worker
    cases = list_cases(raw_dir)
    todo = [c for c in cases if not is_case_done(out_dir, c)]
    if len(todo) < len(cases):
        logger.info("%s: %d of %d cases already preprocessed, skipped", configuration_name,
                    len(cases) - len(todo), len(cases))
    if num_processes > 1 and len(todo) > 1:
        with ProcessPoolExecutor(num_processes) as pool:
            futures = {pool.submit(worker, raw_dir, case, out_dir, plans, configuration): case
                       for case in todo}
            for future in tqdm(futures, desc=f"preprocess {configuration_name}", unit="case"):
                future.result()  # re-raises a worker's error with its message instead of dying silently
    else:
        for case in tqdm(todo, desc=f"preprocess {configuration_name}", unit="case"):
            worker(raw_dir, case, out_dir, plans, configuration)
    return todo
