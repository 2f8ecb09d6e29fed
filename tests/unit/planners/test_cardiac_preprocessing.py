"""planners/cardiac_preprocessing.py: the cardiac writer, which slabs a missing slice touches, and the inverse.

Asserts: the writer stores the m slabs ``(4, 64, 64, 4)`` in [0, 1] of every phantom case with its geometry; a
missing native slice touches exactly the resized slices whose linear interpolation reads it (slice 4 of 10 ->
target slices 6-8 of 16 -> slabs 1 and 2); file slice indices map to canonical ones through the affine (a flipped
slice axis reverses them); prepare -> restore gives back a smooth stack inside the window, for an LPS and an ARI
(M&Ms) affine, with the field of view where the window covers the image and the intensity mapping undone.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from codebrain_seg.cardiac_phantom import make_cardiac_dataset
from codebrain_seg.errors import InputError
from planners.cardiac_preprocessing import (
    canonical_slice_mask,
    file_slice_axis,
    prepare_stack,
    restore_stack,
    slab_array_to_stack,
    slab_mask,
    touched_target_slices,
)
from planners.plan_and_preprocess import plan_and_preprocess

CONFIGURATION = {"slice_axis": 2, "in_plane_crop_mm": 60.0, "target_size": [32, 32, 16], "num_slabs": 4}


def test_writer_stores_the_slabs(project_dirs):
    make_cardiac_dataset(41, num_subjects=2, shape=(32, 32, 8))
    out = plan_and_preprocess(41, ["3d_cardiac_cpu"])
    plans = json.loads((out / "codebrainPlans.json").read_text())
    folder = out / plans["configurations"]["3d_cardiac_cpu"]["data_identifier"]
    slabs = np.load(folder / "phantom000_ED.npy")
    properties = json.loads((folder / "phantom000_ED.json").read_text())
    assert slabs.shape == (4, 64, 64, 4) and slabs.dtype == np.float32
    assert 0.0 <= slabs.min() and slabs.max() <= 1.0 and slabs.max() > 0.9
    assert properties["window_centre"] == "label box" and properties["original_shape"] == [32, 32, 8]
    assert len(list(folder.glob("*.npy"))) == 4


def test_touched_slices_and_slabs():
    missing = np.zeros(10, bool)
    missing[4] = True
    touched = touched_target_slices(missing, 16)
    assert np.flatnonzero(touched).tolist() == [6, 7, 8]
    assert slab_mask(touched, 4).tolist() == [False, True, True, False]
    assert not touched_target_slices(np.zeros(10, bool), 16).any()


def test_file_to_canonical_slices():
    lps = np.diag([-1.5, -1.5, 10.0, 1.0])
    assert file_slice_axis(lps, 2) == (2, False)
    ari = np.array([[0, 1.5, 0, 0], [1.5, 0, 0, 0], [0, 0, -10.0, 0], [0, 0, 0, 1]])  # M&Ms-2: A, R, I
    assert file_slice_axis(ari, 2) == (2, True)
    flags = [True, False, False, False, False]
    assert canonical_slice_mask(flags, ari, 2).tolist() == flags[::-1]
    assert canonical_slice_mask(flags, lps, 2).tolist() == flags


@pytest.mark.parametrize("affine", [np.diag([-1.5, -1.5, 10.0, 1.0]),
                                    np.array([[0, 1.5, 0, 0], [1.5, 0, 0, 0], [0, 0, -10.0, 0], [0, 0, 0, 1]])])
def test_prepare_and_restore_are_inverse(affine):
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (48, 40, 10)], indexing="ij")
    image = (500 + 300 * np.cos(grid[0] * 1.5) * np.cos(grid[1]) + 100 * grid[2]).astype(np.float32)
    slabs, missing, properties = prepare_stack(image, affine, (1.5, 1.5, 10.0), CONFIGURATION)
    assert slabs.shape == (4, 32, 32, 4) and not missing.any()
    restored, inside = restore_stack(slab_array_to_stack(slabs), properties)
    assert restored.shape == image.shape and inside.shape == image.shape
    # a 60 mm window of 1.5 mm pixels: 40 of the 48 (resp. all 40) pixels of each in-plane file axis
    assert inside.sum() == 40 * 40 * 10 and not inside.all()
    error = np.abs(restored[inside] - image[inside])
    assert np.median(error) < 0.01 * image.max() and error.max() < 0.06 * image.max()
    assert np.all(restored[~inside] == properties["intensity_low"])


def test_missing_slices_do_not_set_the_intensity_range():
    image = np.full((32, 32, 8), 100.0, np.float32)
    image += np.arange(32)[:, None, None]
    image[..., 3] = 0.0
    missing = np.zeros(8, bool)
    missing[3] = True
    _, slabs_missing, properties = prepare_stack(image, np.eye(4), (1.5, 1.5, 10.0), CONFIGURATION, missing)
    assert properties["intensity_low"] > 99 and slabs_missing.any()
    with pytest.raises(InputError, match="every slice is missing"):
        prepare_stack(image, np.eye(4), (1.5, 1.5, 10.0), CONFIGURATION, np.ones(8, bool))
