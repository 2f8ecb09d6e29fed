"""Imputation metrics against scikit-image, and the paper's aggregation against the released IXI table."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import (
    mean_squared_error,
    peak_signal_noise_ratio,
    structural_similarity,
)

from codebrain_seg.errors import InputError
from codebrain_seg.metrics import (
    PSNR_CAP,
    calibrated_brain_psnr,
    percentile_normalise,
    region_metrics,
    slice_metrics,
    ssim_map_3d,
    volume_metrics,
)


def _random_pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.random(shape).astype(np.float32)
    prediction = np.clip(target + rng.normal(0, 0.15, shape), 0, 1).astype(np.float32)
    return prediction, target


@pytest.mark.parametrize("shape", [(4, 64, 64), (2, 37, 53), (1, 11, 11)])
def test_slice_metrics_agree_with_scikit_image(shape):
    prediction, target = _random_pair(sum(shape), shape)
    scores = slice_metrics(prediction, target)
    for index in range(shape[0]):
        ssim = structural_similarity(prediction[index], target[index], gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=1.0)
        psnr = peak_signal_noise_ratio(target[index], prediction[index], data_range=1.0)
        mae = float(np.abs(prediction[index].astype(np.float64) - target[index]).mean())
        assert scores["ssim"][index] / 100 == pytest.approx(ssim, abs=1e-4)
        assert scores["psnr"][index] == pytest.approx(psnr, abs=1e-4)
        assert scores["mae"][index] / 1000 == pytest.approx(mae, abs=1e-4)


def test_slice_metrics_structured_images_and_scales():
    yy, xx = np.mgrid[0:48, 0:48] / 48.0
    target = (0.5 + 0.5 * np.sin(6 * xx) * np.cos(4 * yy))[None].astype(np.float32)
    prediction = np.clip(target * 0.9 + 0.02, 0, 1).astype(np.float32)
    scores = slice_metrics(prediction, target)
    reference = structural_similarity(prediction[0], target[0], gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0)
    assert scores["ssim"][0] == pytest.approx(100 * reference, abs=1e-2)
    assert scores["mae"][0] == pytest.approx(1000 * np.abs(prediction - target).mean(), rel=1e-4)
    assert scores["psnr"][0] == pytest.approx(10 * np.log10(1 / mean_squared_error(target, prediction)), abs=1e-4)


def test_identical_slices_are_capped_not_infinite():
    image = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
    scores = slice_metrics(image, image)
    assert np.all(scores["psnr"] == PSNR_CAP)
    assert np.allclose(scores["ssim"], 100.0) and np.allclose(scores["mae"], 0.0)


def test_slice_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        slice_metrics(np.zeros((1, 16, 16)), np.zeros((1, 16, 17)))
    with pytest.raises(ValueError, match="at least 11"):
        slice_metrics(np.zeros((1, 8, 16)), np.zeros((1, 8, 16)))


def test_ssim_map_3d_matches_scikit_image_inside():
    prediction, target = _random_pair(3, (24, 26, 22))
    local = ssim_map_3d(prediction, target)
    assert local.shape == prediction.shape
    _, full = structural_similarity(prediction, target, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, full=True)
    inner = (slice(5, -5),) * 3
    np.testing.assert_allclose(local[inner], full[inner], atol=1e-4)


def test_percentile_normalise_and_regions():
    rng = np.random.default_rng(1)
    volume = rng.random((20, 20, 20)).astype(np.float32) * 500
    brain = np.zeros(volume.shape, bool)
    brain[4:16, 4:16, 4:16] = True
    scaled = percentile_normalise(volume, brain)
    assert scaled.min() == 0 and scaled.max() == 1 and not scaled[~brain].any()
    assert not percentile_normalise(np.zeros_like(volume), brain).any()
    label = np.zeros(volume.shape, np.uint8)
    label[8:11, 8:11, 8:11] = 2
    scores = volume_metrics(volume * 3 + 7, volume, brain, label)  # affine rescaling is normalised away
    assert set(scores) == {"brain", "tumour", "healthy"}
    assert scores["brain"]["psnr"] == PSNR_CAP and scores["brain"]["ssim"] == pytest.approx(100, abs=1e-3)
    assert scores["tumour"]["voxels"] == 27 and scores["healthy"]["voxels"] == 12 ** 3 - 27
    worse = region_metrics(np.zeros_like(scaled), scaled, {"brain": brain})["brain"]
    assert worse["mae"] == pytest.approx(1000 * scaled[brain].mean(), rel=1e-4)


def test_calibrated_brain_psnr_ignores_gain_and_offset_and_scores_only_the_brain():
    rng = np.random.default_rng(0)
    target = rng.uniform(100, 1000, size=(12, 12, 6)).astype(np.float32)
    brain = np.zeros(target.shape, bool)
    brain[2:10, 2:10, 1:5] = True
    target[~brain] = 0
    # Inside the 0.5-99.5 percentiles an affine map of the truth is recovered exactly by the fit.
    low, high = np.percentile(target[brain], (0.5, 99.5))
    inside = np.clip(target, low, high)
    prediction = 3.0 * inside - 7.0
    prediction[~brain] = 12345.0  # outside the brain: never scored
    assert calibrated_brain_psnr(prediction, target, brain) == PSNR_CAP
    noisy = prediction + rng.normal(0, 3.0 * (high - low) * 0.1, size=target.shape).astype(np.float32)
    # noise of 0.1 of the scaled range -> MSE ~ 0.01 -> about 20 dB
    assert calibrated_brain_psnr(noisy, target, brain) == pytest.approx(20.0, abs=1.0)
    with pytest.raises(InputError):
        calibrated_brain_psnr(prediction, target, np.zeros_like(brain))
