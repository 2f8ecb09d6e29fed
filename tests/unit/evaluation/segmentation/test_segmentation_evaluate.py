"""evaluation/segmentation/evaluate.py: scenarios, methods, the segmentation cache and argument checks (no nnU-Net
training)."""
from __future__ import annotations

import copy

import pytest

from codebrain_seg.cli.evaluate_segmentation import main
from codebrain_seg.io import read_json
from codebrain_seg.run.methods import METHODS
from evaluation.segmentation.evaluate import (
    invalidate_if_changed,
    evaluate_segmentation,
    make_scenarios,
    resolve_methods,
)

BRATS = ["T1", "T1Gd", "T2", "FLAIR"]


def test_cached_segmentations_are_dropped_when_the_segmenter_changes(tmp_path):
    cached = tmp_path / "segmentations" / "full" / "CASE.nii.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"old")
    settings = {"model_folder": "/a", "checkpoints": {"all": [1, 2]}, "tile_step_size": 0.5}
    invalidate_if_changed(tmp_path, settings)
    assert cached.is_file()
    invalidate_if_changed(tmp_path, copy.deepcopy(settings))
    assert cached.is_file()
    invalidate_if_changed(tmp_path, {**settings, "tile_step_size": 1.0})
    assert not cached.exists() and read_json(tmp_path / "segmenter.json")["tile_step_size"] == 1.0


def test_scenarios():
    three = make_scenarios(BRATS, "3to1")
    assert [s.label for s in three] == ["T1", "T2", "FLAIR", "T1Gd"]
    assert [s.pattern for s in three] == ["0111", "1101", "1110", "1011"]
    assert three[3].missing == [1] and three[3].available == [True, False, True, True]
    every = make_scenarios(BRATS, "all")
    assert len(every) == 14 and len({s.pattern for s in every}) == 14
    assert "T1+T1Gd+T2" in {s.label for s in every}
    assert [s.label for s in make_scenarios(["T1", "T2", "PD"], "3to1")] == ["T1", "T2", "PD"]
    with pytest.raises(ValueError, match="scenario"):
        make_scenarios(BRATS, "2to2")


def test_methods_come_from_the_registry():
    assert resolve_methods(None) == ["zero", "codebrain", "mean"]
    assert all(m in METHODS for m in resolve_methods(None))
    assert resolve_methods(["mean", "zero", "mean"]) == ["zero", "mean"]
    with pytest.raises(ValueError, match="unknown imputation method.*magic; registered methods: zero, linear, nearest, mean, codebrain"):
        resolve_methods(["mean", "magic"])


def test_segmenter_and_train_segmenter_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["-d", "1", "-f", "0", "--segmenter", "x", "--train-segmenter"])
    with pytest.raises(ValueError, match="not both"):
        evaluate_segmentation(1, 0, segmenter="x", train_segmenter=True)
