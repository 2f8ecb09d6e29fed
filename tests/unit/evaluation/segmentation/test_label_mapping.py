"""WT/TC/ET from a segmenter's own dataset.json, channel aliases, and the recovered fraction of the report."""
from __future__ import annotations

import numpy as np
import pytest

from codebrain_seg.raw_dataset import BRATS_REGIONS, BRATS_REGIONS_CLASS_ORDER
from evaluation.segmentation.label_mapping import (
    canonical_channel,
    match_channels,
    parse_label_map,
    prediction_regions,
    truth_regions,
)
from evaluation.segmentation.metrics import region_scores
from evaluation.segmentation.nnunet_setup import SegmenterError
from evaluation.segmentation.report import recovery

DATASET137 = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
              "regions_class_order": [1, 2, 3]}
PROJECT = {"labels": BRATS_REGIONS, "regions_class_order": BRATS_REGIONS_CLASS_ORDER}


def test_region_based_models_are_read_through_their_painting_order():
    assert dict(prediction_regions(PROJECT).regions) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
    assert dict(prediction_regions(DATASET137).regions) == {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    # A painting order that writes TC as 7 and ET as 9: the written values are what counts.
    odd = {**DATASET137, "regions_class_order": [5, 7, 9]}
    assert dict(prediction_regions(odd).regions) == {"WT": (5, 7, 9), "TC": (7, 9), "ET": (9,)}
    # Ground-truth files hold the labels themselves: a region is its list.
    assert dict(truth_regions(DATASET137).regions) == {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}


def test_regions_without_names_are_told_apart_by_nesting():
    unnamed = {"labels": {"background": 0, "a": [3], "b": [1, 2, 3], "c": [1, 3]}, "regions_class_order": [3, 2, 1]}
    assert dict(prediction_regions(unnamed).regions) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def test_label_based_models_are_mapped_by_the_brats_names():
    plain = {"labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 4}}
    assert dict(prediction_regions(plain).regions) == {"WT": (1, 2, 4), "TC": (2, 4), "ET": (4,)}
    brats23 = {"labels": {"background": 0, "NCR": 1, "SNFH": 2, "ET": 3}}
    assert dict(truth_regions(brats23).regions) == {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


@pytest.mark.parametrize("dataset_json, expected", [
    ({"labels": {"background": 0, "tumor": 1}}, "cannot derive WT/TC/ET"),
    ({"labels": {"background": 0, "x": [1, 2], "y": [2, 3]}, "regions_class_order": [1, 2]}, "cannot be told apart"),
    ({"labels": DATASET137["labels"]}, "no regions_class_order"),
])
def test_unmappable_models_are_refused_with_what_was_found(dataset_json, expected):
    with pytest.raises(SegmenterError, match=expected):
        prediction_regions(dataset_json)


def test_the_same_prediction_scores_the_same_under_both_conventions():
    rng = np.random.default_rng(0)
    project = rng.choice([0, 1, 2, 3], size=(12, 12, 12), p=[0.7, 0.1, 0.1, 0.1])
    truth = rng.choice([0, 1, 2, 3], size=(12, 12, 12), p=[0.7, 0.1, 0.1, 0.1])
    dataset137 = np.choose(project, [0, 2, 1, 3])  # what the same network writes under Dataset137's dataset.json
    ours = region_scores(project, truth, prediction_regions=prediction_regions(PROJECT).regions,
                         truth_regions=truth_regions(PROJECT).regions)
    theirs = region_scores(dataset137, truth, prediction_regions=prediction_regions(DATASET137).regions,
                           truth_regions=truth_regions(PROJECT).regions)
    assert ours == theirs
    wrong = region_scores(dataset137, truth)  # scored with the project's numbers: TC becomes oedema + enhancing
    assert wrong["TC"]["dice"] != pytest.approx(ours["TC"]["dice"])


def test_seg_label_map_parsing():
    assert dict(parse_label_map("WT=1,2,3; TC=2,3; ET=3").regions) == {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    for bad in ("WT=1,2,3;TC=2,3", "WT=a;TC=2;ET=3", "XX=1;TC=2;ET=3", "WT=0;TC=2;ET=3"):
        with pytest.raises(SegmenterError, match="seg-label-map"):
            parse_label_map(bad)


def test_channels_match_through_aliases_in_order():
    assert [canonical_channel(n) for n in ("t1n", "T1ce", "t1c", "t2w", "t2f", "Flair", "PD", "DWI")] == \
        ["T1", "T1Gd", "T1Gd", "T2", "FLAIR", "FLAIR", "PD", "DWI"]
    pairs = match_channels(["t1n", "t1c", "t2w", "t2f"], ["T1", "T1Gd", "T2", "FLAIR"])
    assert [p["sequence"] for p in pairs] == ["T1", "T1Gd", "T2", "FLAIR"]
    with pytest.raises(SegmenterError, match=r"takes channels \['T1', 'T2', 'T1ce', 'FLAIR'\]"):
        match_channels(["T1", "T2", "T1ce", "FLAIR"], ["T1", "T1Gd", "T2", "FLAIR"])
    with pytest.raises(SegmenterError, match="dataset's order"):
        match_channels(["T1", "T1ce", "T2"], ["T1", "T1Gd", "T2", "FLAIR"])


def test_recovered_fraction_of_the_dice_gap():
    cells = lambda **values: {"mean of regions": values}  # noqa: E731
    table = {"rows": ["zero-fill", "codebrain", "full"], "dice": {
        "zero-fill": cells(T1=0.5, mean=0.5), "codebrain": cells(T1=0.65, mean=0.65), "full": cells(T1=None, mean=0.8)}}
    assert recovery(table, "zero-fill") == {"codebrain": {"mean of regions": {"T1": pytest.approx(0.5),
                                                                              "mean": pytest.approx(0.5)}}}
    table["dice"]["full"] = cells(T1=None, mean=0.4)  # full no better than the baseline: nothing to recover
    assert recovery(table, "zero-fill")["codebrain"]["mean of regions"] == {"T1": None, "mean": None}
