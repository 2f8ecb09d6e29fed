"""Imputation metrics against scikit-image, and the paper's aggregation against the released IXI table."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import (
    mean_squared_error,
    peak_signal_noise_ratio,
    structural_similarity,
)

from codebrain_seg.metrics import (
    PSNR_CAP,
    percentile_normalise,
    region_metrics,
    slice_metrics,
    ssim_map_3d,
    volume_metrics,
)
from evaluation.imputation.aggregate import (
    all_patterns,
    describe_pattern,
    markdown_table,
    pair_means,
    parse_pattern,
    pattern_string,
    summarise,
    summarise_pairs,
)

# shared/design/codebrain-reference.md section 7: released IXI Stage II PSNR per (pattern, missing) pair,
# channels (T1, T2, PD).
IXI_PAIRS = [("001", "T1", 28.72), ("001", "T2", 30.36), ("010", "T1", 28.20), ("010", "PD", 33.57),
             ("100", "T2", 23.83), ("100", "PD", 27.26), ("011", "T1", 29.09), ("110", "PD", 34.74),
             ("101", "T2", 31.33)]


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


def test_patterns():
    assert all_patterns(3) == ["100", "010", "001", "110", "101", "011"]
    assert len(all_patterns(4)) == 14 and all_patterns(4)[:4] == ["1000", "0100", "0010", "0001"]
    assert pattern_string([False, True, True]) == "011" and parse_pattern("011") == [False, True, True]
    assert describe_pattern("011", ["T1", "T2", "PD"]) == "T2+PD -> T1"
    with pytest.raises(ValueError):
        parse_pattern("012")


def test_aggregation_reproduces_released_ixi_table():
    pairs = [{"pattern": p, "missing": m, "psnr": v, "ssim": 0.0, "mae": 0.0} for p, m, v in IXI_PAIRS]
    summary = summarise_pairs(pairs)
    assert round(summary["overall"]["psnr"], 2) == 29.68
    assert round(summary["O->O"]["psnr"], 2) == 28.66
    assert round(summary["M->O"]["psnr"], 2) == 31.72
    # pattern means as printed in the table (29.54 / 30.89 / 25.54, halves rounded either way)
    assert summary["patterns"]["001"]["psnr"] == pytest.approx(29.54)
    assert summary["patterns"]["010"]["psnr"] == pytest.approx(30.885)
    assert summary["patterns"]["100"]["psnr"] == pytest.approx(25.545)
    assert summary["variance"]["psnr"] == pytest.approx(np.var([v for *_, v in IXI_PAIRS]))
    assert summary["num_pairs"] == 9


def test_pair_means_pool_slices_over_cases_then_pairs_are_unweighted():
    rows = []
    # pair A: 3 slices in case x, 1 in case y -> mean over the 4 slices; pair B: 1 slice.
    for case, value in [("x", 10.0), ("x", 20.0), ("x", 30.0), ("y", 40.0)]:
        rows.append({"method": "m", "protocol": "paper", "region": "image", "case": case, "pattern": "01",
                     "missing": "A", "psnr": value, "ssim": 1.0, "mae": 2.0})
    rows.append({"method": "m", "protocol": "paper", "region": "image", "case": "x", "pattern": "10",
                 "missing": "B", "psnr": 5.0, "ssim": 1.0, "mae": 2.0})
    pairs = {p["missing"]: p for p in pair_means(rows)}
    assert pairs["A"]["psnr"] == 25.0 and pairs["A"]["count"] == 4 and pairs["A"]["cases"] == 2
    summary = summarise(rows)["paper"]["image"]["m"]
    assert summary["overall"]["psnr"] == 15.0  # (25 + 5) / 2, not weighted by slice count
    table = markdown_table({"m": summary}, ["A", "B"], title="t")
    assert "| **overall** | | 15.00 / 1.00 / 2.00 |" in table


def test_summarise_rejects_duplicate_pairs():
    pair = {"pattern": "01", "missing": "A", "psnr": 1.0, "ssim": 1.0, "mae": 1.0}
    with pytest.raises(ValueError, match="twice"):
        summarise_pairs([pair, dict(pair)])
