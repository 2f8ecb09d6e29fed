"""Any nnU-Net segmenter scored by its own label meaning, and the retrained protocol with the Missing segmenter.

Tiny phantoms and nnU-Net's smoke trainer (2 iterations): the figures mean nothing, the bookkeeping everything.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_segmentation_eval import BRATS, DEMO_ID, SMOKE, tiny  # noqa: F401 (tiny is the module's fixture)

from codebrain_seg.cli.evaluate_segmentation import main
from codebrain_seg.io import read_json, read_nifti
from evaluation.segmentation import nnunet_bridge as bridge
from evaluation.segmentation.evaluate import evaluate_segmentation
from evaluation.segmentation.label_mapping import prediction_regions
from evaluation.segmentation.metrics import region_scores

# nnU-Net's own BraTS conversion (Dataset137_BraTS21): 1 = oedema, 2 = necrosis, 3 = enhancing; channel T1ce.
DATASET137_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
DATASET137_ORDER = [1, 2, 3]
DATASET137_CHANNELS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}


def _as_dataset137(model, target):
    """The same weights under nnU-Net's Dataset137 dataset.json: its regions are painted back as 1 = ED, 2 = NCR."""
    shutil.copytree(model, target)
    data = read_json(target / "dataset.json")
    data.update(labels=DATASET137_LABELS, regions_class_order=DATASET137_ORDER, channel_names=DATASET137_CHANNELS)
    (target / "dataset.json").write_text(json.dumps(data))
    return target


def test_a_dataset137_model_gets_the_same_dice_as_the_project_convention(tiny, tmp_path, capsys):
    project = tmp_path / "ProjectTrainer__P__3d_fullres"
    shutil.copytree(tiny.model, project)
    d137 = _as_dataset137(tiny.model, tmp_path / "Dataset137Trainer__P__3d_fullres")
    options = dict(methods=["zero"], tile_step_size=1.0, use_mirroring=False)
    ours = evaluate_segmentation(DEMO_ID, 0, segmenter=project, **options)
    theirs = evaluate_segmentation(DEMO_ID, 0, segmenter=d137, **options)
    # The label maps the two write differ (1 and 2 swapped) ...
    case = tiny.split["val"][0]
    ours_map = read_nifti(ours.output_dir / "segmentations" / "full" / f"{case}.nii.gz", dtype=np.int16).data
    theirs_map = read_nifti(theirs.output_dir / "segmentations" / "full" / f"{case}.nii.gz", dtype=np.int16).data
    swapped = np.choose(ours_map, [0, 2, 1, 3])
    assert np.array_equal(theirs_map, swapped)
    # ... and the scores are the same, region by region, because each is read through its own dataset.json.
    assert theirs.table["dice"] == ours.table["dice"]
    assert theirs.table["mapping"]["segmenter_regions"]["TC"] == [2, 3]
    assert ours.table["mapping"]["segmenter_regions"]["TC"] == [1, 3]
    assert [c["segmenter"] for c in theirs.table["mapping"]["channels"]] == ["T1", "T1ce", "T2", "FLAIR"]
    # Scored with the project's fixed meaning instead, the Dataset137 model's TC would be oedema + enhancing.
    truth = read_nifti(tiny.raw_dir / "labelsTr" / f"{case}.nii.gz", dtype=np.int16).data
    wrong = region_scores(theirs_map, truth)["TC"]["dice"]
    right = region_scores(theirs_map, truth,
                          prediction_regions=prediction_regions(read_json(d137 / "dataset.json")).regions)["TC"]
    assert right["dice"] == pytest.approx(region_scores(ours_map, truth)["TC"]["dice"])
    if np.isin(ours_map, [1, 2]).any():
        assert wrong != pytest.approx(right["dice"])


def test_seg_label_map_overrides_what_the_dataset_json_says(tiny, tmp_path):
    d137 = _as_dataset137(tiny.model, tmp_path / "Stated__P__3d_fullres")
    stated = evaluate_segmentation(DEMO_ID, 0, segmenter=d137, methods=["zero"], tile_step_size=1.0,
                                   use_mirroring=False, seg_label_map="WT=1,2,3;TC=2,3;ET=3")
    assert stated.table["mapping"]["segmenter_regions"] == {"WT": [1, 2, 3], "TC": [2, 3], "ET": [3],
                                                            "source": "--seg-label-map"}


@pytest.mark.parametrize("problem", ["labels", "channel_order"])
def test_unmappable_or_misordered_segmenters_are_refused(tiny, tmp_path, capsys, problem):
    broken = tmp_path / "Broken__P__3d_fullres"
    shutil.copytree(tiny.model, broken)
    data = read_json(broken / "dataset.json")
    if problem == "labels":
        data["labels"], expected = {"background": 0, "tumor": 1}, "cannot derive WT/TC/ET"
        data.pop("regions_class_order", None)
    else:
        data["channel_names"] = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
        expected = "in the dataset's order"
    (broken / "dataset.json").write_text(json.dumps(data))
    code = main(["-d", str(DEMO_ID), "-f", "0", "--segmenter", str(broken), "--methods", "zero"])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow  # two segmenters trained: about 2 CI-minutes
def test_retrained_protocol_trains_a_missing_and_a_method_segmenter(tiny, capsys):
    code = main(["-d", str(DEMO_ID), "-f", "0", "--train-segmenter", "--seg-trainer", SMOKE, "--seg-gpu-memory-gb",
                 "0.5", "--protocol", "retrained", "--retrained-scenarios", "T1Gd", "--methods", "mean",
                 "--tile-step-size", "1", "--disable-tta", "-np", "1"])
    out = capsys.readouterr().out
    assert code == 0
    root = bridge.segmentation_folders(tiny.raw_dir.name, 0).root
    trees = root / "retrained" / "2d_cpu" / "1011"
    missing_model = next((trees / "missing" / "nnUNet_results").rglob("fold_all")).parent
    method_model = next((trees / "mean" / "nnUNet_results").rglob("fold_all")).parent
    # The Missing segmenter takes the three available sequences; the mean one all four, T1Gd imputed.
    assert list(read_json(missing_model / "dataset.json")["channel_names"].values()) == ["T1", "T2", "FLAIR"]
    assert list(read_json(method_model / "dataset.json")["channel_names"].values()) == BRATS
    case = tiny.split["train"][0]
    exported = trees / "mean" / "nnUNet_raw" / tiny.raw_dir.name / "imagesTr" / f"{case}_0001.nii.gz"
    assert exported.resolve() == (root / "imputed" / "train" / "2d_cpu" / "mean" / "1011" / f"{case}_0001.nii.gz")
    assert not any(c in tiny.split["val"] for c in
                   [p.name[:-len(".nii.gz")] for p in (trees / "mean" / "nnUNet_raw" / tiny.raw_dir.name
                                                       / "labelsTr").iterdir()])
    table_dir = root / "retrained" / tiny.model.name / "val" / "2d_cpu"
    table = read_json(table_dir / "table.json")
    assert table["protocol"] == "retrained" and table["baseline"] == "Missing"
    assert table["rows"] == ["Missing", "mean", "full"] and table["columns"] == ["T1Gd", "mean"]
    dice = table["dice"]
    gap = dice["full"]["mean of regions"]["mean"] - dice["Missing"]["mean of regions"]["T1Gd"]
    recovered = table["recovery"]["mean"]["mean of regions"]["T1Gd"]
    if gap > 0:
        assert recovered == pytest.approx((dice["mean"]["mean of regions"]["T1Gd"]
                                           - dice["Missing"]["mean of regions"]["T1Gd"]) / gap)
    else:
        assert recovered is None
    assert set(table["segmenter_budget"]) == {"full", "Missing, missing T1Gd", "mean, missing T1Gd"}
    assert table["segmenter_budget"]["Missing, missing T1Gd"]["trainer"] == SMOKE
    assert "retrained protocol, mean Dice" in out and "Recovered fraction" in (table_dir / "table.md").read_text()
    # A rerun trains and predicts nothing again.
    again = evaluate_segmentation(DEMO_ID, 0, train_segmenter=True, seg_trainer=SMOKE, gpu_memory_gb=0.5,
                                  protocol="retrained", retrained_scenarios=["T1Gd"], methods=["mean"],
                                  tile_step_size=1.0, use_mirroring=False, num_processes=1)
    assert again.predicted == 0 and again.table["dice"] == dice


def test_retrained_protocol_refuses_an_external_segmenter(tiny, capsys):
    code = main(["-d", str(DEMO_ID), "-f", "0", "--segmenter", str(tiny.model), "--protocol", "both"])
    assert code == 2 and "--train-segmenter instead of --segmenter" in capsys.readouterr().err
