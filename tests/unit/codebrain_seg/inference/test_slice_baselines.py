"""codebrain_seg/inference/slice_baselines.py: the missing-slice baselines of the registry.

Asserts: linear interpolation is exact on a linear ramp along the slice axis (any axis, runs of 1-3 slices) and
copies the nearest given slice at an end of the stack; nearest copies the nearest given slice (a tie goes to the
lower index); zero sets the missing slices to 0; all three leave the given slices unchanged and refuse a stack
with every slice missing; the registry names the slice methods.
"""
from __future__ import annotations

import numpy as np
import pytest

from codebrain_seg.errors import InputError
from codebrain_seg.inference.slice_baselines import (
    interpolate_missing_slices,
    nearest_missing_slices,
    zero_missing_slices,
)
from codebrain_seg.run.methods import METHODS, slice_methods


def _ramp(axis: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base, slope = rng.random((6, 7)), rng.random((6, 7))
    volume = base[..., None] + slope[..., None] * np.arange(10)[None, None, :]
    return np.moveaxis(volume, -1, axis).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("run", [[4], [3, 4], [2, 3, 4]])
def test_linear_interpolation_is_exact_on_a_ramp(axis, run):
    volume = _ramp(axis)
    missing = np.zeros(10, bool)
    missing[run] = True
    corrupted = np.moveaxis(volume.copy(), axis, -1)
    corrupted[..., missing] = 0.0
    corrupted = np.moveaxis(corrupted, -1, axis)
    filled = interpolate_missing_slices(corrupted, missing, axis)
    np.testing.assert_allclose(filled, volume, rtol=0, atol=1e-5)
    given = np.moveaxis(filled, axis, -1)[..., ~missing]
    assert np.array_equal(given, np.moveaxis(corrupted, axis, -1)[..., ~missing])


def test_ends_copy_and_nearest_and_zero():
    volume = np.stack([np.full((4, 4), float(k + 1)) for k in range(6)], axis=-1).astype(np.float32)
    missing = np.array([True, False, False, True, True, True])
    linear = interpolate_missing_slices(volume, missing)
    assert linear[0, 0].tolist() == [2.0, 2.0, 3.0, 3.0, 3.0, 3.0]  # the ends copy the nearest given slice
    middle = np.array([False, False, True, True, False, False])
    assert nearest_missing_slices(volume, middle)[0, 0].tolist() == [1, 2, 2, 5, 5, 6]
    tie = np.array([False, True, False, False, False, False])
    assert nearest_missing_slices(volume, tie)[0, 0].tolist() == [1, 1, 3, 4, 5, 6]  # tie -> the lower index
    zero = zero_missing_slices(volume, middle)
    assert zero[0, 0].tolist() == [1, 2, 0, 0, 5, 6]
    for function in (interpolate_missing_slices, nearest_missing_slices, zero_missing_slices):
        with pytest.raises(InputError, match="every slice is missing"):
            function(volume, np.ones(6, bool))
        with pytest.raises(InputError, match="6 slices"):
            function(volume, np.ones(5, bool))


def test_registry_slice_methods():
    assert slice_methods() == ["copedit", "copedit-mask", "linear", "nearest", "zero"]
    assert METHODS["codebrain"].slice_imputer is None and METHODS["zero"].fills_slices
    with pytest.raises(InputError, match="fills missing sequences, not missing slices"):
        METHODS["mean"].build_slice_imputer(None)
    with pytest.raises(InputError, match="fills missing slices"):
        METHODS["linear"].build_imputer(None)
