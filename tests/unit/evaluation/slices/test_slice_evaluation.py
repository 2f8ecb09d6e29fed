"""The missing-slice evaluation (evaluation/slices/): runs, scores, the Dice path and the tables, with the baselines.

Asserts: the interior runs per case and length; a perfect fill scores PSNR 100 / SSIM 1 and zero-fill less; the
cardiac label mapping reads the converter's names, nnU-Net's ACDC names and the M&Ms order, and refuses labels it
cannot tell apart; on a phantom dataset (held-out subject, baselines only, a stand-in segmenter that thresholds
intensities), the table has one row per missing length and method plus ``complete`` with Dice, linear
interpolation beats zero-fill on every length, the complete stack's Dice on the filled slices beats the
zero-filled one's, the files are written, and a rerun reuses every row.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from codebrain_seg.cardiac_phantom import make_cardiac_dataset
from evaluation.segmentation.label_mapping import cardiac_structures
from evaluation.segmentation.nnunet_setup import SegmenterError
from evaluation.slices.evaluate import evaluate_slices
from evaluation.slices.scenarios import missing_runs, slice_quality
from planners.plan_and_preprocess import plan_and_preprocess


def test_runs_and_scores():
    assert [r.name for r in missing_runs(10, 1, 3)] == ["L1_s1", "L1_s4", "L1_s8"]
    assert [r.slices for r in missing_runs(10, 3, 2)] == [[1, 2, 3], [6, 7, 8]]
    assert missing_runs(4, 3, 3) == [] and len(missing_runs(6, 1, 10)) == 4
    truth = np.random.default_rng(0).random((20, 20, 8)).astype(np.float32)
    flags = np.zeros(8, bool)
    flags[3:5] = True
    fov = np.ones_like(truth, bool)
    perfect = slice_quality(truth, truth, flags, 2, fov)
    assert perfect["psnr_2d"] == 100.0 and perfect["psnr_3d"] == 100.0
    assert perfect["ssim_2d"] == pytest.approx(1.0) and perfect["ssim_3d"] == pytest.approx(1.0)
    zeroed = truth.copy()
    zeroed[..., flags] = 0
    worse = slice_quality(zeroed, truth, flags, 2, fov)
    assert worse["psnr_2d"] < 10 and worse["ssim_2d"] < 0.1


def test_cardiac_label_mapping():
    ours = cardiac_structures({"labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3}})
    assert dict(ours.structures) == {"LV": (3,), "RV": (1,), "MYO": (2,)}
    acdc = cardiac_structures({"labels": {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}})
    assert dict(acdc.structures) == dict(ours.structures)
    mnms = cardiac_structures({"labels": {"background": 0, "LV cavity": 1, "myocardium": 2, "RV cavity": 3}})
    assert dict(mnms.structures) == {"LV": (1,), "RV": (3,), "MYO": (2,)}
    assert dict(cardiac_structures({}, "LV=1;RV=3;MYO=2").structures)["RV"] == (3,)
    with pytest.raises(SegmenterError, match="cannot tell"):
        cardiac_structures({"labels": {"background": 0, "a": 1, "b": 2, "c": 3}})


class ThresholdSegmenter:
    """Stand-in for an nnU-Net segmenter: blood pool -> LV (3), muscle-dark ring -> MYO (2)."""

    def __init__(self) -> None:
        self.model = SimpleNamespace(folder=Path("threshold_segmenter"), channel_names=["cine"],
                                     dataset_json={"labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3}},
                                     fingerprint=lambda: {"threshold": 1})
        self.calls = 0

    def read_images(self, files):
        image = nib.load(str(files[0]))
        return np.asarray(image.dataobj, np.float32)[None], {"affine": image.affine}

    def predict(self, images, properties, output):
        image = images[0]
        label = np.where(image > 500, 3, np.where((image > 80) & (image < 270), 2, 0)).astype(np.uint8)
        output.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(label, properties["affine"]), str(output))
        self.calls += 1


def test_evaluation_with_baselines_and_a_segmenter(project_dirs):
    make_cardiac_dataset(41, num_subjects=3, shape=(32, 32, 8))
    plan_and_preprocess(41)
    segmenter = ThresholdSegmenter()
    result = evaluate_slices(41, 0, methods=["linear", "nearest", "zero"], lengths=[1, 2], runs_per_case=2,
                             segmenter_predictor=segmenter)
    groups = {(g["length"], g["method"]): g for g in result.table["groups"]}
    assert set(groups) == {(n, m) for n in (1, 2) for m in ("linear", "nearest", "zero", "complete")}
    for length in (1, 2):
        assert groups[(length, "linear")]["psnr_2d"]["mean"] > groups[(length, "zero")]["psnr_2d"]["mean"] + 5
        assert groups[(length, "complete")]["dice_LV"]["mean"] > groups[(length, "zero")]["dice_LV"]["mean"]
        assert "psnr_2d" not in groups[(length, "complete")] and groups[(length, "linear")]["n"] == 4
    names = {p.name for p in result.files}
    assert names == {"per_scenario.csv", "table.csv", "table.md", "table.json"}
    text = (result.output_dir / "table.md").read_text()
    assert "| 1 | linear | 4 |" in text and "Dice LV" in text and "FID / FVD are left out" in text
    table = json.loads((result.output_dir / "table.json").read_text())
    assert table["meta"]["mapping"]["ground_truth"]["LV"] == [3] and len(table["rows"]) == 2 * 2 * 2 * 4
    calls = segmenter.calls
    again = evaluate_slices(41, 0, methods=["linear", "nearest", "zero"], lengths=[1, 2], runs_per_case=2,
                            segmenter_predictor=segmenter)
    assert again.computed == 0 and again.reused == result.computed and segmenter.calls == calls
