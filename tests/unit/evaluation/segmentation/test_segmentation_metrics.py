"""WT/TC/ET regions, Dice and HD95 against hand-computed values on small synthetic masks."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.segmentation.metrics import (
    EMPTY_HD95_PENALTY_MM,
    REGION_NAMES,
    brats_regions,
    mask_scores,
    region_scores,
)


def _empty(shape: tuple[int, int, int] = (12, 12, 12)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def test_regions_from_labels():
    label = np.zeros((4, 1, 1), np.uint8)
    label[:, 0, 0] = [0, 1, 2, 3]  # background, NCR, ED, ET
    regions = brats_regions(label)
    assert REGION_NAMES == ("WT", "TC", "ET")
    assert regions.shape == (3, 4, 1, 1) and regions.dtype == bool
    np.testing.assert_array_equal(regions[0, :, 0, 0], [False, True, True, True])  # WT = NCR + ED + ET
    np.testing.assert_array_equal(regions[1, :, 0, 0], [False, True, False, True])  # TC = NCR + ET
    np.testing.assert_array_equal(regions[2, :, 0, 0], [False, False, False, True])  # ET


def test_regions_reject_non_3d():
    with pytest.raises(ValueError, match="3D"):
        brats_regions(np.zeros((4, 4), np.uint8))


def test_dice_and_hd95_of_a_half_cube():
    # Ground truth: a 2x2x2 cube (8 voxels); prediction: its lower 2x2x1 half (4 voxels).
    truth, prediction = _empty(), _empty()
    truth[2:4, 2:4, 2:4] = True
    prediction[2:4, 2:4, 2] = True
    scores = mask_scores(prediction, truth)
    # Dice = 2 * 4 / (4 + 8).
    assert scores["dice"] == pytest.approx(2 / 3, abs=1e-6)
    # Every voxel of both masks is a surface voxel. Prediction -> truth: all 0. Truth -> prediction: 4 voxels at 0,
    # 4 at 1 mm; the 95th percentile of [0,0,0,0,1,1,1,1] is 1. HD95 = max(0, 1) = 1.
    assert scores["hd95"] == pytest.approx(1.0, abs=1e-6)


def test_hd95_uses_the_voxel_spacing():
    truth, prediction = _empty(), _empty()
    truth[5, 5, 5] = True
    prediction[5, 5, 8] = True  # 3 voxels away along the third axis
    assert mask_scores(prediction, truth)["hd95"] == pytest.approx(3.0)
    assert mask_scores(prediction, truth, spacing=(1.0, 1.0, 2.0))["hd95"] == pytest.approx(6.0)
    assert mask_scores(prediction, truth, spacing=(1.0, 1.0, 2.0))["dice"] == 0.0


def test_hd95_is_the_95th_percentile_not_the_maximum():
    # Ground truth: a line of 20 voxels; prediction: the same line plus two voxels 10 mm away from it.
    truth = _empty((24, 12, 20))
    truth[0:20, 5, 5] = True
    prediction = truth.copy()
    prediction[0, 5, 15] = prediction[19, 5, 15] = True
    scores = mask_scores(prediction, truth)
    assert scores["dice"] == pytest.approx(2 * 20 / (20 + 22), abs=1e-6)
    # Prediction -> truth distances: twenty 0 and two 10. Linear 95th percentile: position 0.95 * 21 = 19.95,
    # between the 20th value (0) and the 21st (10): 9.5. Truth -> prediction: all 0. HD95 = 9.5 (max HD = 10).
    assert scores["hd95"] == pytest.approx(9.5, abs=1e-4)  # float32 quantile


@pytest.mark.parametrize(
    "truth_empty, prediction_empty, dice, hd95",
    [
        (True, True, 1.0, 0.0),  # nothing to find, nothing found
        (True, False, 0.0, EMPTY_HD95_PENALTY_MM),  # false positive
        (False, True, 0.0, EMPTY_HD95_PENALTY_MM),  # missed region
        (False, False, 1.0, 0.0),  # both present (and identical): MONAI's values
    ],
)
def test_empty_region_conventions(truth_empty, prediction_empty, dice, hd95):
    present = _empty()
    present[3:6, 3:6, 3:6] = True
    truth = _empty() if truth_empty else present
    prediction = _empty() if prediction_empty else present.copy()
    scores = mask_scores(prediction, truth)
    assert scores["dice"] == pytest.approx(dice)
    assert scores["hd95"] == pytest.approx(hd95)


def test_penalty_is_the_brats_image_diagonal():
    assert EMPTY_HD95_PENALTY_MM == pytest.approx(np.sqrt(240**2 + 240**2 + 155**2), abs=0.01)


def test_region_scores_of_label_maps():
    truth = np.zeros((10, 10, 10), np.uint8)
    truth[2:6, 2:6, 2:6] = 2  # oedema
    truth[3:5, 3:5, 3:5] = 1  # necrotic core inside: TC present, no ET anywhere
    prediction = np.zeros_like(truth)
    prediction[2:6, 2:6, 2:6] = 2  # the whole tumour found, but all as oedema: no TC, no ET
    scores = region_scores(prediction, truth, spacing=(1.0, 1.0, 1.0))
    assert set(scores) == {"WT", "TC", "ET"}
    assert scores["WT"] == {"dice": pytest.approx(1.0), "hd95": pytest.approx(0.0)}
    assert scores["TC"] == {"dice": 0.0, "hd95": EMPTY_HD95_PENALTY_MM}  # present in truth, missed
    assert scores["ET"] == {"dice": 1.0, "hd95": 0.0}  # absent in both


def test_region_scores_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="shape"):
        region_scores(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        region_scores(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), spacing=(1.0, 0.0, 1.0))
