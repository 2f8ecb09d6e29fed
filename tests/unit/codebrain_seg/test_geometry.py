"""Voxel-order bookkeeping: RAS reordering of (..., X, Y, Z) arrays and its exact inverse."""
from __future__ import annotations

import numpy as np
import pytest
from nibabel import orientations

from codebrain_seg.geometry import from_canonical, to_canonical

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS-like: x and y flipped against RAS
PERMUTED = np.array([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # axes permuted and flipped


@pytest.mark.parametrize("affine", [LPS, PERMUTED], ids=["lps", "permuted"])
def test_every_leading_item_is_reoriented_as_nibabel_does_and_back(affine):
    data = np.random.default_rng(0).random((2, 3, 4, 5, 6)).astype(np.float32)
    transform = orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt("RAS"))
    canonical = to_canonical(data, affine)
    for i in range(2):
        for j in range(3):
            assert np.array_equal(canonical[i, j], orientations.apply_orientation(data[i, j], transform))
    assert canonical.flags["C_CONTIGUOUS"]
    assert np.array_equal(from_canonical(canonical, affine), data)


def test_an_array_already_in_ras_order_is_not_copied():
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert to_canonical(data, np.eye(4)) is data
    assert from_canonical(data, np.eye(4)) is data
    strided = data[:, ::2]  # not contiguous: a contiguous copy with the same values
    result = to_canonical(strided, np.eye(4))
    assert result.flags["C_CONTIGUOUS"] and np.array_equal(result, strided)
