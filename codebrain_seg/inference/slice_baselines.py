"""Missing-slice baselines and the interface of a slice imputer (a method of the registry for a cardiac dataset).

A slice imputer is called as ``imputer.impute_slices(image, affine, spacing, missing) -> (image, info)`` with

* ``image``: ``(X, Y, Z)`` float32 in the file's voxel order and intensities (missing slices as they are, usually
  all zero);
* ``missing``: one flag per slice along the file's slice axis (:meth:`SliceImputationRequest.axis`);
* ``what``: the case, for error messages;

and returns the filled ``(X, Y, Z)`` array, whose given slices are the input's, unchanged, and a JSON-ready
``info`` dict for the sidecar. The baselines fill along the slice axis of the file (orientation-free):

* ``linear``  — linear interpolation, per voxel, between the nearest given slice below and above (by slice index;
  the stacks have one spacing); a missing run at an end of the stack, with a given slice on one side only, copies it;
* ``nearest`` — a copy of the nearest given slice (a tie goes to the lower index);
* ``zero``    — the missing slices stay zero (lower bound).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from codebrain_seg.errors import InputError
from codebrain_seg.inference.request import ImputationContext
from planners.cardiac_preprocessing import file_slice_axis

SLICE_BASELINE_SCALE = "the given slices' own intensities (filled from them)"


def _checked(volume: np.ndarray, missing: Sequence[bool], axis: int) -> tuple[np.ndarray, np.ndarray]:
    volume = np.asarray(volume)
    flags = np.asarray(missing, dtype=bool)
    if volume.ndim != 3 or not 0 <= int(axis) < 3:
        raise InputError(f"expected an (X, Y, Z) volume and a slice axis 0..2, got {volume.shape} and {axis}")
    if flags.shape != (volume.shape[axis],):
        raise InputError(f"{flags.size} missing-slice flags for {volume.shape[axis]} slices along axis {axis}")
    if flags.all():
        raise InputError("every slice is missing: at least one must be given to fill the others")
    return np.moveaxis(volume, axis, -1).astype(np.float32), flags


def interpolate_missing_slices(volume: np.ndarray, missing: Sequence[bool], axis: int = 2) -> np.ndarray:
    """``linear`` (module docstring): returns a float32 copy with the missing slices filled."""
    moved, flags = _checked(volume, missing, axis)
    out = moved.copy()
    given = np.flatnonzero(~flags)
    for k in np.flatnonzero(flags):
        below, above = given[given < k], given[given > k]
        if len(below) and len(above):
            low, high = int(below[-1]), int(above[0])
            weight = (k - low) / (high - low)
            out[..., k] = (1.0 - weight) * moved[..., low] + weight * moved[..., high]
        else:
            out[..., k] = moved[..., int(below[-1] if len(below) else above[0])]
    return np.moveaxis(out, -1, axis)


def nearest_missing_slices(volume: np.ndarray, missing: Sequence[bool], axis: int = 2) -> np.ndarray:
    """``nearest`` (module docstring): returns a float32 copy with the missing slices filled."""
    moved, flags = _checked(volume, missing, axis)
    out = moved.copy()
    given = np.flatnonzero(~flags)
    for k in np.flatnonzero(flags):
        out[..., k] = moved[..., int(given[np.argmin(np.abs(given - k))])]  # argmin: the lower index on a tie
    return np.moveaxis(out, -1, axis)


def zero_missing_slices(volume: np.ndarray, missing: Sequence[bool], axis: int = 2) -> np.ndarray:
    """``zero`` (module docstring): returns a float32 copy with the missing slices set to 0."""
    moved, flags = _checked(volume, missing, axis)
    out = moved.copy()
    out[..., flags] = 0.0
    return np.moveaxis(out, -1, axis)


class SliceImputer(Protocol):
    """Interface of a missing-slice method (module docstring)."""

    name: str
    intensity_scale: str

    def impute_slices(self, image: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                      missing: Sequence[bool], what: str = "the case") -> tuple[np.ndarray, dict[str, Any]]:
        """Fill the missing slices of one ``(X, Y, Z)`` stack (``what`` names it in errors)."""
        ...


@dataclass
class SliceImputationRequest:
    """Where the slices of a cardiac case are: the plans' canonical slice axis, and the file's axis it is."""

    slice_axis: int

    def axis(self, affine: np.ndarray) -> int:
        """The file voxel axis that is the planned (canonical) slice axis."""
        return file_slice_axis(affine, self.slice_axis)[0]


def planned_slice_axis(plans: dict[str, Any]) -> int:
    """The canonical slice axis of a missing-slice dataset's plans (the same in every configuration)."""
    axes = {int(c["slice_axis"]) for c in plans.get("configurations", {}).values() if "slice_axis" in c}
    if len(axes) != 1:
        raise InputError(f"the plans give no single slice axis (found {sorted(axes)}): not a missing-slice dataset")
    return axes.pop()


class _Baseline:
    """A baseline slice imputer built from an :class:`ImputationContext` (only the plans' slice axis is used)."""

    name = ""
    intensity_scale = SLICE_BASELINE_SCALE
    function = staticmethod(zero_missing_slices)

    def __init__(self, context: ImputationContext) -> None:
        self.request = SliceImputationRequest(planned_slice_axis(context.plans))

    def impute_slices(self, image: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                      missing: Sequence[bool], what: str = "the case") -> tuple[np.ndarray, dict[str, Any]]:
        """See the module docstring."""
        axis = self.request.axis(affine)
        return type(self).function(image, missing, axis), {"method": self.name, "slice_axis_in_file": axis}


class LinearSlices(_Baseline):
    """The ``linear`` method: linear interpolation between the nearest given slices."""

    name = "linear"
    function = staticmethod(interpolate_missing_slices)


class NearestSlices(_Baseline):
    """The ``nearest`` method: a copy of the nearest given slice."""

    name = "nearest"
    function = staticmethod(nearest_missing_slices)


class ZeroSlices(_Baseline):
    """The ``zero`` method for missing slices: they stay zero."""

    name = "zero"
    function = staticmethod(zero_missing_slices)
