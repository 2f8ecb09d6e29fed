"""Preprocessing of the cardiac (missing-slice) configurations, and its exact geometric inverse for inference.

A short-axis stack ``(X, Y, K)`` (K slices of 5-10 mm) becomes the m slabs CoPeDiT treats as its elements:

1. closest canonical (RAS) voxel order; the configuration's ``slice_axis`` moved last;
2. intensities per volume: ``(value - p0.5) / (p99.5 - p0.5)`` clipped to [0, 1], the percentiles taken over
   the **given** slices only (a missing slice is all zero and must not pull them down); missing slices 0;
3. the in-plane window: a square of ``in_plane_crop_mm`` (so ``round(mm / spacing)`` pixels per axis), centred on
   the label box (training cases with labels) or the image centre (imputation: no labels), zero outside the image;
4. trilinear resize (``align_corners=False``) to the configuration's ``target_size`` (64 x 64 x 16 for
   ``3d_cardiac_cpu``): in-plane to the network grid, through-plane K -> Z' slices;
5. the stack cut into m consecutive slabs ``(m, X', Y', Z' / m)`` (:func:`stack_to_slabs`): element axis first,
   where a brain case has its sequences.

Per case (``$codebrain_preprocessed/DatasetXXX_Name/<data_identifier>/``) the writer :func:`preprocess_cardiac_case`
stores ``CASE.npy`` (the slabs, float32) and ``CASE.json`` (geometry and intensity mapping; written last).

**Which slabs are missing.** A target slice is *touched* by a missing native slice when its linear interpolation
reads it (:func:`touched_target_slices`: the same resize applied to the missing indicator, > 0); a slab is missing
when any of its slices is touched. So a native run of 1-3 slices of a 10-slice stack makes 1-2 of the 4 slabs
missing, and every value the inverse writes into a missing native slice comes from missing (generated) slabs.

**Inverse** (:func:`restore_stack`): the target stack resized back to the window (trilinear), pasted into the
canonical grid, intensities mapped back (``x (p99.5 - p0.5) + p0.5``), back to the file's voxel order; the
field-of-view mask says where the window covered the image. :func:`file_slice_axis` maps slice indices of the
file (what a user names in ``--missing-slices``) to canonical ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from codebrain_seg.errors import InputError
from codebrain_seg.geometry import canonical_spacing, canonical_transform, from_canonical, to_canonical
from codebrain_seg.io import read_nifti, write_json, write_npy
from codebrain_seg.raw_dataset import image_path, label_path
from planners.case_arrays import extract_window, paste_window
from planners.fingerprint import bounding_box
from planners.volume_preprocessing import resize_volume

PERCENTILES = (0.5, 99.5)


def file_slice_axis(affine: np.ndarray, slice_axis: int) -> tuple[int, bool]:
    """``(file axis, flipped)``: the file's voxel axis that is canonical axis ``slice_axis``, and whether canonical
    order runs the other way (canonical index ``K - 1 - f`` for file index ``f``)."""
    transform = canonical_transform(np.asarray(affine, dtype=np.float64))
    for axis, (target, direction) in enumerate(transform):
        if int(target) == int(slice_axis):
            return axis, bool(direction < 0)
    raise InputError(f"no voxel axis maps to canonical axis {slice_axis}")  # pragma: no cover (a valid affine)


def canonical_slice_mask(file_missing: Sequence[bool], affine: np.ndarray, slice_axis: int) -> np.ndarray:
    """A per-slice flag array in the file's slice order -> the same flags in canonical slice order."""
    flags = np.asarray(file_missing, dtype=bool)
    return flags[::-1].copy() if file_slice_axis(affine, slice_axis)[1] else flags.copy()


def touched_target_slices(missing: np.ndarray, depth: int) -> np.ndarray:
    """``(depth,)`` bool: the resized slices whose linear interpolation reads a missing native slice."""
    indicator = np.asarray(missing, dtype=np.float32)[None, None, None, :]
    return resize_volume(indicator, (1, 1, int(depth)))[0, 0, 0] > 1e-6


def slab_mask(touched: np.ndarray, num_slabs: int) -> np.ndarray:
    """``(m,)`` bool: a slab is missing when any of its target slices is touched."""
    touched = np.asarray(touched, dtype=bool)
    if touched.size % num_slabs:
        raise InputError(f"{touched.size} target slices cannot be cut into {num_slabs} slabs")
    return touched.reshape(num_slabs, -1).any(axis=1)


def stack_to_slab_array(stack: np.ndarray, num_slabs: int) -> np.ndarray:
    """``(X, Y, m * Z)`` -> ``(m, X, Y, Z)`` (numpy twin of ``networks.copedit.stack_to_slabs``)."""
    x, y, z = stack.shape
    if z % num_slabs:
        raise InputError(f"a stack of {z} slices cannot be cut into {num_slabs} slabs")
    return np.ascontiguousarray(stack.reshape(x, y, num_slabs, z // num_slabs).transpose(2, 0, 1, 3))


def slab_array_to_stack(slabs: np.ndarray) -> np.ndarray:
    """``(m, X, Y, Z)`` -> ``(X, Y, m * Z)``, the inverse of :func:`stack_to_slab_array`."""
    m, x, y, z = slabs.shape
    return np.ascontiguousarray(np.asarray(slabs).transpose(1, 2, 0, 3).reshape(x, y, m * z))


def window_geometry(shape: Sequence[int], spacing: Sequence[float], crop_mm: float,
                    centre: Sequence[float] | None = None) -> tuple[list[int], list[int]]:
    """``(start, size)`` of the two in-plane axes of the square ``crop_mm`` window centred on ``centre`` (voxel
    coordinates, default the image centre); the start may be negative (zero padding)."""
    sizes = [max(1, int(round(float(crop_mm) / float(spacing[a])))) for a in range(2)]
    middle = [shape[a] / 2.0 for a in range(2)] if centre is None else [float(c) for c in centre]
    starts = [int(round(middle[a] - sizes[a] / 2.0)) for a in range(2)]
    return starts, sizes


def intensity_range(stack: np.ndarray, given: np.ndarray, what: str = "the case") -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of the given slices of ``(X, Y, K)``; InputError when they are equal."""
    values = stack[..., np.asarray(given, dtype=bool)]
    if values.size == 0:
        raise InputError(f"{what}: every slice is missing, nothing to impute from")
    low, high = (float(v) for v in np.percentile(values, PERCENTILES))
    if not high > low:
        raise InputError(f"{what}: the given slices are constant ({low:g}): no intensity range to normalise by")
    return low, high


def prepare_stack(image: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                  configuration: Mapping[str, Any], missing: Sequence[bool] | None = None,
                  centre: Sequence[float] | None = None, what: str = "the case"
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess one stack as the cardiac configuration's training data was (module docstring).

    Args:
        image: ``(X, Y, Z)`` in the file's voxel order and intensities.
        affine: the file's ``(4, 4)`` voxel-to-world matrix.
        spacing: the file's voxel size in mm (file axis order).
        configuration: a ``3d_cardiac_stack`` configuration (``slice_axis``, ``in_plane_crop_mm``,
            ``target_size``, ``num_slabs``).
        missing: per slice in **canonical** order, True = missing (default none).
        centre: in-plane window centre in canonical voxels (default the image centre).
        what: the case, for error messages.

    Returns:
        ``(slabs (m, X', Y', Z'/m) float32 in [0, 1], slab_missing (m,) bool, properties)``; ``properties`` is
        what :func:`restore_stack` needs, JSON-ready.
    """
    affine = np.asarray(affine, dtype=np.float64)
    axis = int(configuration["slice_axis"])
    target = [int(s) for s in configuration["target_size"]]
    num_slabs = int(configuration["num_slabs"])
    canonical = to_canonical(np.asarray(image, dtype=np.float32), affine)
    order = [a for a in range(3) if a != axis] + [axis]
    stack = np.ascontiguousarray(np.transpose(canonical, order))
    spacing_c = canonical_spacing(list(spacing), affine)
    spacing_s = [spacing_c[a] for a in order]
    slices = stack.shape[2]
    missing_c = np.zeros(slices, bool) if missing is None else np.asarray(missing, dtype=bool)
    if missing_c.shape != (slices,):
        raise InputError(f"{what}: {missing_c.size} missing-slice flags for a stack of {slices} slices")
    low, high = intensity_range(stack, ~missing_c, what)
    normalised = np.clip((stack - low) / (high - low), 0.0, 1.0).astype(np.float32)
    normalised[..., missing_c] = 0.0
    starts, sizes = window_geometry(stack.shape, spacing_s, float(configuration["in_plane_crop_mm"]), centre)
    window = extract_window(normalised, starts + [0], sizes + [slices])
    resized = np.clip(resize_volume(window[None], target)[0], 0.0, 1.0).astype(np.float32)
    touched = touched_target_slices(missing_c, target[2])
    slabs = stack_to_slab_array(resized, num_slabs)
    properties = {
        "original_shape": [int(s) for s in np.asarray(image).shape],
        "original_affine": affine.tolist(),
        "canonical_shape": [int(s) for s in canonical.shape],
        "slice_axis": axis,
        "stack_order": order,
        "stack_spacing": [float(s) for s in spacing_s],
        "window_start": starts,
        "window_size": sizes,
        "window_centre": "label box" if centre is not None else "image centre",
        "target_size": target,
        "num_slabs": num_slabs,
        "intensity_low": low,
        "intensity_high": high,
        "missing_canonical_slices": [int(k) for k in np.flatnonzero(missing_c)],
        "touched_target_slices": [int(k) for k in np.flatnonzero(touched)],
    }
    return slabs, slab_mask(touched, num_slabs), properties


def restore_stack(stack: np.ndarray, properties: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Map a target stack ``(X', Y', Z')`` in [0, 1] back onto the case's grid (file voxel order, original
    intensities); returns ``(values (X, Y, Z), field_of_view (X, Y, Z) bool)`` (values are 0 outside the window)."""
    stack = np.asarray(stack, dtype=np.float32)
    if list(stack.shape) != list(properties["target_size"]):
        raise InputError(f"stack {list(stack.shape)} does not have the target size {properties['target_size']}")
    order = [int(a) for a in properties["stack_order"]]
    canonical_shape = [int(s) for s in properties["canonical_shape"]]
    stack_shape = [canonical_shape[a] for a in order]
    sizes = [int(s) for s in properties["window_size"]] + [stack_shape[2]]
    starts = [int(s) for s in properties["window_start"]] + [0]
    window = resize_volume(stack[None], sizes)[0]
    values = paste_window(window, starts, stack_shape)
    inside = paste_window(np.ones(sizes, np.float32), starts, stack_shape) > 0
    low, high = float(properties["intensity_low"]), float(properties["intensity_high"])
    values = values * (high - low) + low
    back = np.argsort(order)
    affine = np.asarray(properties["original_affine"], dtype=np.float64)
    values = from_canonical(np.ascontiguousarray(np.transpose(values, back)), affine)
    inside = from_canonical(np.ascontiguousarray(np.transpose(inside, back)), affine)
    return values.astype(np.float32), inside.astype(bool)


def field_of_view(shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float],
                  configuration: Mapping[str, Any]) -> np.ndarray:
    """``(X, Y, Z)`` bool in the file's voxel order: where the in-plane window of an imputation (centred on the image,
    no labels) covers the stack; every slice the same."""
    affine = np.asarray(affine, dtype=np.float64)
    axis = int(configuration["slice_axis"])
    canonical = to_canonical(np.zeros([int(s) for s in shape], np.float32), affine)
    order = [a for a in range(3) if a != axis] + [axis]
    stack_shape = [canonical.shape[a] for a in order]
    spacing_c = canonical_spacing(list(spacing), affine)
    starts, sizes = window_geometry(stack_shape, [spacing_c[a] for a in order],
                                    float(configuration["in_plane_crop_mm"]))
    inside = paste_window(np.ones(sizes + [stack_shape[2]], np.float32), starts + [0], stack_shape) > 0
    return from_canonical(np.ascontiguousarray(np.transpose(inside, np.argsort(order))), affine).astype(bool)


def label_box_centre(label: np.ndarray, affine: np.ndarray, slice_axis: int) -> list[float] | None:
    """Centre of the labelled heart's in-plane box in canonical stack voxels (None when nothing is labelled)."""
    labelled = to_canonical(np.asarray(label), np.asarray(affine, dtype=np.float64)) > 0
    if not labelled.any():
        return None
    box = bounding_box(labelled)
    in_plane = [a for a in range(3) if a != int(slice_axis)]
    return [(box[a][0] + box[a][1]) / 2.0 for a in in_plane]


def preprocess_cardiac_case(raw_dir: Path, case_id: str, out_dir: Path, plans: Mapping[str, Any],
                            configuration: Mapping[str, Any]) -> dict[str, Any]:
    """Preprocess one complete training case for a ``3d_cardiac_stack`` configuration into ``out_dir``."""
    volume = read_nifti(image_path(raw_dir, case_id, 0))
    if not np.isfinite(volume.data).all():
        raise InputError(f"case {case_id}: the image has non-finite voxels (NaN or inf)")
    centre = None
    label_file = label_path(raw_dir, case_id)
    if label_file.is_file():
        centre = label_box_centre(read_nifti(label_file).data, volume.affine, int(configuration["slice_axis"]))
    slabs, _, properties = prepare_stack(volume.data, volume.affine, volume.spacing, configuration, None, centre,
                                         f"case {case_id}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_npy(out_dir / f"{case_id}.npy", slabs)
    properties = {"case_id": case_id, "channel_names": list(plans["channel_names"]),
                  "original_spacing": [float(s) for s in volume.spacing], **properties, "has_label": False,
                  "preprocessed_shape": list(slabs.shape),
                  "layout": "(m slabs, X, Y, slices per slab): consecutive slabs of the resized stack"}
    write_json(out_dir / f"{case_id}.json", properties)
    return properties
