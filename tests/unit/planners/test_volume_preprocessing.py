"""planners/copedit_planner.py and planners/volume_preprocessing.py: the box rounding and the inverse of crop and resize."""
from __future__ import annotations

import numpy as np

from planners.copedit_planner import (
    CPU_CONFIGURATION,
    PAPER_CONFIGURATION,
    plan_copedit_configurations,
)
from planners.volume_preprocessing import prepare_volume, restore_volume


def test_box_rounding_and_the_inverse_of_crop_and_resize() -> None:
    fingerprint = {"channel_names": ["T1", "T1Gd", "T2", "FLAIR"], "num_cases": 2, "cases": [{}, {}],
                   "max_brain_extent": [137, 170, 131]}
    plans = plan_copedit_configurations(fingerprint)
    assert plans[CPU_CONFIGURATION]["box_size"] == [144, 176, 136]
    assert plans[PAPER_CONFIGURATION]["network"]["vae"]["channels"] == [256, 384, 512]
    # a smooth brain-like case survives crop -> resize -> inverse up to interpolation, zero outside the brain
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 48, 30)], indexing="ij"))
    brain = (grid ** 2).sum(axis=0) < 0.7
    images = np.stack([brain * (100.0 + 50 * c + 30 * grid[0]) for c in range(4)]).astype(np.float32)
    configuration = {"box_size": [40, 48, 32], "target_size": [32, 32, 16],
                     "network": {"vae": {"channels": [8, 16, 32]}}}
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])  # not RAS: the voxel order is restored too
    volume, mask, properties = prepare_volume(images, [True] * 4, affine, {"normalization": {"upper_percentile": 99.5}},
                                              configuration)
    assert volume.shape == (4, 32, 32, 16)
    restored = restore_volume(volume, properties, mask=mask, denormalise=True)
    assert restored.shape == images.shape
    assert np.all(restored[:, ~brain] == 0)
    inside = np.abs(restored[:, brain] - images[:, brain]) / images[:, brain]
    assert np.median(inside) < 0.05
