"""Voxel-order bookkeeping: every stage works in the closest canonical (RAS) voxel order and maps back exactly."""
from __future__ import annotations

import numpy as np
from nibabel import orientations


def canonical_transform(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform taking an array in ``affine``'s voxel order to RAS voxel order."""
    return orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt("RAS"))


def to_canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Flip/permute the last three axes of ``data`` (…, X, Y, Z) into RAS voxel order (no interpolation)."""
    transform = canonical_transform(affine)
    lead = data.ndim - 3
    return _apply(data, transform, lead)


def from_canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_canonical` for the same original ``affine``."""
    back = orientations.ornt_transform(orientations.axcodes2ornt("RAS"), orientations.io_orientation(affine))
    return _apply(data, back, data.ndim - 3)


def canonical_spacing(spacing: tuple[float, ...] | list[float], affine: np.ndarray) -> list[float]:
    """Voxel spacing re-ordered into RAS voxel order."""
    order = canonical_transform(affine)[:, 0].astype(int)
    result = [0.0, 0.0, 0.0]
    for source_axis, target_axis in enumerate(order):
        result[target_axis] = float(spacing[source_axis])
    return result


def _apply(data: np.ndarray, transform: np.ndarray, lead: int) -> np.ndarray:
    # An array already in RAS order (the predictor's input after impute_folder's to_canonical) is returned as it is:
    # copying a 4-sequence BraTS case costs about 0.3 s, paid twice per imputed case before this shortcut.
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return np.ascontiguousarray(data)
    if lead == 0:
        return np.ascontiguousarray(orientations.apply_orientation(data, transform))
    # apply_orientation flips / permutes the first axes and keeps the rest: move the leading axes behind the three
    # spatial ones, orient (a view), move them back and copy once.
    behind = np.moveaxis(data, list(range(lead)), list(range(3, 3 + lead)))
    moved = orientations.apply_orientation(behind, transform)
    return np.ascontiguousarray(np.moveaxis(moved, list(range(3, 3 + lead)), list(range(lead))))
