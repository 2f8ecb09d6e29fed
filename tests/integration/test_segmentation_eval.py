"""codebrain_evaluate_segmentation: an nnU-Net segmenter trained in the test (tiny phantoms) or given as a model
folder, scenarios, caching and resume, bad input; the held-back real cases with the session's real segmenter."""
from __future__ import annotations

import copy
import csv
import json
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import (
    REAL_CONFIGURATION,
    REAL_DATASET,
    REAL_SEGMENTER,
    REAL_SEGMENTER_MEMORY_GB,
)

from codebrain_seg.cli.evaluate_segmentation import main
from codebrain_seg.demo_data import make_demo_dataset
from codebrain_seg.inference.baselines import ZeroFill
from codebrain_seg.io import read_json
from codebrain_seg.raw_dataset import image_path
from codebrain_seg.run.methods import METHODS, Method
from evaluation.segmentation import nnunet_bridge as bridge
from evaluation.segmentation.evaluate import (
    evaluate_segmentation,
)
from planners.plan_and_preprocess import plan_and_preprocess

DEMO_ID = 990
SMOKE = "nnUNetTrainerSmoke"
BRATS = ["T1", "T1Gd", "T2", "FLAIR"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Six 40x40x32 phantoms, CodeBrain plans and splits, and an nnU-Net segmenter trained for 2 iterations."""
    root = tmp_path_factory.mktemp("segmentation_eval")
    with pytest.MonkeyPatch.context() as patch:
        dirs = {kind: root / kind for kind in ("raw", "preprocessed", "results")}
        for kind, folder in dirs.items():
            folder.mkdir()
            patch.setenv(f"codebrain_{kind}", str(folder))
        for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
            patch.delenv(variable, raising=False)
        raw_dir = make_demo_dataset(DEMO_ID, num_cases=6, shape=(40, 40, 32))
        preprocessed = plan_and_preprocess(DEMO_ID, ["2d_cpu"])
        split = read_json(preprocessed / "splits_final.json")[0]
        model = bridge.prepare_trained_segmenter(raw_dir, split["train"], 0, SMOKE, gpu_memory_gb=0.5,
                                                 num_processes=1)
        yield SimpleNamespace(root=root, dirs=dirs, raw_dir=raw_dir, split=split, model=model)


def test_segmenter_is_trained_on_the_fold_training_cases_only(tiny):
    folders = bridge.segmentation_folders(tiny.raw_dir.name, 0)
    exported = sorted(p.name for p in (folders.raw / tiny.raw_dir.name / "labelsTr").iterdir())
    assert exported == sorted(f"{c}.nii.gz" for c in tiny.split["train"])
    assert not set(tiny.split["val"]) & {name[: -len(".nii.gz")] for name in exported}
    assert (folders.raw / tiny.raw_dir.name / "imagesTr" / f"{tiny.split['train'][0]}_0000.nii.gz").is_symlink()
    assert tiny.model == (folders.results / tiny.raw_dir.name / f"{SMOKE}__nnUNetPlans_0.5GB__3d_fullres")
    assert (tiny.model / "fold_all" / "checkpoint_final.pth").is_file()
    # nnU-Net's variables were set for the calls only.
    import os

    assert "nnUNet_raw" not in os.environ and "nnUNet_extTrainer" not in os.environ


def test_existing_model_folder_is_used_as_it_is(tiny, capsys):
    external = tiny.root / "elsewhere" / "MyTrainer__MyPlans__3d_fullres"
    shutil.copytree(tiny.model, external)
    code = main(["-d", str(DEMO_ID), "-f", "0", "--segmenter", str(external), "--methods", "zero,mean",
                 "--tile-step-size", "1"])
    assert code == 0, capsys.readouterr().err
    out = (bridge.segmentation_folders(tiny.raw_dir.name, 0).root / bridge.external_tag(external) / "val" / "2d_cpu")
    assert f"markdown: {out / 'table.md'}" in capsys.readouterr().out
    table = read_json(out / "table.json")
    assert table["segmenter"] == str(external)
    assert table["rows"] == ["zero-fill", "mean", "full"]
    assert table["columns"] == ["T1", "T2", "FLAIR", "T1Gd", "mean"]  # the paper's Table 4 order
    assert table["cases"] == tiny.split["val"]
    for row in ("zero-fill", "mean"):
        cells = table["dice"][row]["mean of regions"]
        assert all(0.0 <= cells[c] <= 1.0 for c in table["columns"])
        assert cells["mean"] == pytest.approx(np.mean([cells[c] for c in ("T1", "T2", "FLAIR", "T1Gd")]))
    full = table["dice"]["full"]["WT"]
    assert full["T1"] is None and 0.0 <= full["mean"] <= 1.0  # the full row has the mean column only
    with open(out / "per_case.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(tiny.split["val"]) * (1 + 4 * 2)
    assert {r["input"] for r in rows} == {"zero-fill", "mean", "full"}
    assert "| zero-fill |" in (out / "table.md").read_text()
    assert (out / "dice_bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (out / "segmentations" / "zero").iterdir()} == {"0111", "1101", "1110", "1011",
                                                                           "imputer.json"}
    assert read_json(out / "segmentations" / "mean" / "imputer.json") == {"method": "mean"}
    # Only the missing sequence is stored per imputed scenario.
    imputed = bridge.segmentation_folders(tiny.raw_dir.name, 0).root / "imputed" / "val" / "2d_cpu" / "mean" / "1110"
    assert sorted(p.name for p in imputed.iterdir()) == sorted(f"{c}_0003.nii.gz" for c in tiny.split["val"])
    # Nothing was trained for the external model.
    trained = bridge.segmentation_folders(tiny.raw_dir.name, 0).results / tiny.raw_dir.name
    assert [p.name for p in trained.iterdir()] == [tiny.model.name]


def test_rerun_reuses_the_cache_and_an_interrupted_run_resumes(tiny):
    options = dict(seg_trainer=SMOKE, gpu_memory_gb=0.5, methods=["zero"], tile_step_size=1.0)
    first = evaluate_segmentation(DEMO_ID, 0, **options)
    expected = len(tiny.split["val"]) * (1 + 4)
    assert first.predicted + first.reused == expected
    segmentations = sorted((first.output_dir / "segmentations").rglob("*.nii.gz"))
    assert len(segmentations) == expected
    stamps = {path: path.stat().st_mtime_ns for path in segmentations}

    second = evaluate_segmentation(DEMO_ID, 0, **options)
    assert (second.predicted, second.reused, second.imputed) == (0, expected, 0)
    assert {path: path.stat().st_mtime_ns for path in segmentations} == stamps
    assert second.table["dice"] == first.table["dice"]

    # An interruption lost one segmentation and its imputed input: only that one is made again.
    case = tiny.split["val"][0]
    lost = first.output_dir / "segmentations" / "zero" / "1101" / f"{case}.nii.gz"
    lost.unlink()
    root = bridge.segmentation_folders(tiny.raw_dir.name, 0).root
    (root / "imputed" / "val" / "2d_cpu" / "zero" / "1101" / f"{case}_0002.nii.gz").unlink()
    third = evaluate_segmentation(DEMO_ID, 0, **options)
    assert (third.predicted, third.imputed, third.reused) == (1, 1, expected - 1)
    assert lost.is_file()
    assert {p: p.stat().st_mtime_ns for p in segmentations if p != lost} == {
        p: s for p, s in stamps.items() if p != lost}


def test_a_codebrain_variant_is_evaluated_in_a_folder_of_its_own(tiny, monkeypatch, capsys):
    seen = []

    def recording(context):
        """Zero-fill that records the variant options it was built with."""
        seen.append((context.codebrain.ablation, context.codebrain.variant, context.codebrain.code_dim,
                     context.options.get("source_rule")))
        return ZeroFill(context)

    monkeypatch.setitem(METHODS, "recording", Method("recording", recording))
    code = main(["-d", str(DEMO_ID), "-f", "0", "--seg-trainer", SMOKE, "--seg-gpu-memory-gb", "0.5", "--methods",
                 "recording", "--tile-step-size", "1", "--variant", "v1", "--code-dim", "5", "--ablation", "no_fc",
                 "--source-rule", "relevant"])
    assert code == 0, capsys.readouterr().err
    assert seen == [("no_fc", "v1", 5, "relevant")]
    root = bridge.segmentation_folders(tiny.raw_dir.name, 0).root
    tag = "2d_cpu__CodeBrain-v1-d5-no_fc-source_relevant"
    out = root / tiny.model.name / "val" / tag
    table = read_json(out / "table.json")
    assert table["codebrain_model"] == "CodeBrain-v1-d5-no_fc" and table["source_rule"] == "relevant"
    assert "the codebrain row's model: `CodeBrain-v1-d5-no_fc`" in (out / "table.md").read_text()
    assert (out / "segmentations" / "recording" / "0111").is_dir()
    assert (root / "imputed" / "val" / tag / "recording" / "0111").is_dir()
    # nothing of the variant's run lands in the plain method's folders
    assert not (root / tiny.model.name / "val" / "2d_cpu" / "segmentations" / "recording").exists()
    assert not (root / "imputed" / "val" / "2d_cpu" / "recording").exists()


def test_zero_filled_channel_is_exactly_zero_after_nnunet_normalisation(tiny):
    """nnU-Net's z-score inside the non-zero mask of all channels maps an all-zero channel to 0 everywhere."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model = bridge.read_model_folder(tiny.model)
    plans = PlansManager(model.plans)
    configuration = plans.get_configuration("3d_fullres")
    assert configuration.normalization_schemes == ["ZScoreNormalization"] * 4
    assert all(configuration.use_mask_for_norm)
    reader = plans.image_reader_writer_class()
    case = tiny.split["val"][0]
    images, properties = reader.read_images([str(image_path(tiny.raw_dir, case, c)) for c in range(4)])
    preprocessor = configuration.preprocessor_class(verbose=False)
    full, full_mask, _ = preprocessor.run_case_npy(images, None, copy.deepcopy(properties), plans, configuration,
                                                   model.dataset_json)
    inside = full_mask[0] >= 0
    for channel in range(4):
        # In a real case, 0 after normalisation is the channel's mean inside the brain mask.
        assert abs(float(full[channel][inside].mean())) < 1e-4
        zeroed = images.copy()
        zeroed[channel] = 0
        data, mask, _ = preprocessor.run_case_npy(zeroed, None, copy.deepcopy(properties), plans, configuration,
                                                  model.dataset_json)
        assert not data[channel].any()
        np.testing.assert_array_equal(mask, full_mask)  # the other sequences still cover the brain


def test_unknown_method_is_a_clear_cli_error(tiny, capsys):
    assert main(["-d", str(DEMO_ID), "-f", "0", "--methods", "zero,magic"]) == 2
    err = capsys.readouterr().err
    assert "magic" in err and "registered methods" in err and "mean" in err


def test_dataset_without_labels_is_refused(project_dirs, capsys):
    raw_dir = make_demo_dataset(991, num_cases=3, shape=(32, 32, 32), name="NoLabels")
    shutil.rmtree(raw_dir / "labelsTr")
    assert main(["-d", "991", "-f", "0", "--train-segmenter", "--methods", "zero"]) == 2
    assert "needs labelsTr" in capsys.readouterr().err
    assert not (project_dirs["results"] / raw_dir.name).exists()


def test_dataset_without_brats_labels_is_refused(project_dirs, capsys):
    raw_dir = make_demo_dataset(992, num_cases=3, shape=(32, 32, 32), name="OtherLabels")
    dataset_json = read_json(raw_dir / "dataset.json")
    dataset_json["labels"] = {"background": 0, "lesion": 1}
    (raw_dir / "dataset.json").write_text(json.dumps(dataset_json))
    assert main(["-d", "992", "-f", "0", "--train-segmenter", "--methods", "zero"]) == 2
    err = capsys.readouterr().err
    assert "declares labels {'background': 0, 'lesion': 1}" in err and "cannot derive WT/TC/ET" in err


def test_segmenter_with_other_channels_is_refused(tiny, capsys):
    other = tiny.root / "other_channels" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(tiny.model, other)
    dataset_json = read_json(other / "dataset.json")
    dataset_json["channel_names"] = {"0": "T1", "1": "T2", "2": "FLAIR", "3": "PD"}
    (other / "dataset.json").write_text(json.dumps(dataset_json))
    assert main(["-d", str(DEMO_ID), "-f", "0", "--segmenter", str(other), "--methods", "zero"]) == 2
    err = capsys.readouterr().err
    assert "takes channels ['T1', 'T2', 'FLAIR', 'PD']" in err and "'T1Gd'" in err


def test_segmenter_folder_must_hold_a_trained_model(tiny, capsys):
    untrained = tiny.root / "untrained" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    untrained.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(tiny.model / name, untrained / name)
    assert main(["-d", str(DEMO_ID), "-f", "0", "--segmenter", str(untrained), "--methods", "zero"]) == 2
    assert "checkpoint_final.pth" in capsys.readouterr().err


def test_without_a_trained_segmenter_the_error_says_how_to_get_one(tiny, capsys):
    assert main(["-d", str(DEMO_ID), "-f", "0", "--seg-trainer", "nnUNetTrainerShort", "--methods", "zero"]) == 2
    err = capsys.readouterr().err
    assert "--train-segmenter" in err and "--segmenter" in err and SMOKE in err


# ---- real data -----------------------------------------------------------------------------------------------
# The session's real project (tests/conftest.py): all real BraTS 2018 cases converted and planned, fold 0's segmenter
# trained by nnUNetTrainerShort on its 12 training cases (nnU-Net planned for a 0.5 GB memory target: 48x64x48
# patches), and CodeBrain trained briefly on the same cases. The 3 held-back cases are evaluated as slabs of 48 axial
# slices around their tumours (one nnU-Net patch deep), to fit the CI time.


def _real_options(**extra) -> dict:
    return dict(configuration=REAL_CONFIGURATION, seg_trainer=REAL_SEGMENTER, gpu_memory_gb=REAL_SEGMENTER_MEMORY_GB,
                tile_step_size=1.0, num_processes=2, **extra)


@pytest.mark.slow  # about 13 CI-minutes: a real segmenter trained, then 4 scenarios x 3 rows predicted
def test_real_cases_zero_fill_codebrain_and_full(real_segmenter, real_held_back_slabs):
    """The four "3 -> 1" scenarios of the held-back real cases for zero-fill, CodeBrain and full: the short trainer
    made the segmenter from the fold's training cases only, the table is written, and full > zero-fill."""
    import torch

    start = time.monotonic()
    folders = bridge.segmentation_folders(real_segmenter.raw.name, 0)
    exported = sorted(p.name[: -len(".nii.gz")] for p in (folders.raw / real_segmenter.raw.name / "labelsTr").iterdir())
    assert exported == sorted(real_segmenter.split["train"]) and not set(exported) & set(real_segmenter.split["val"])
    checkpoint = torch.load(real_segmenter.model / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)
    assert checkpoint["trainer_name"] == REAL_SEGMENTER

    cases = real_held_back_slabs.case_ids
    result = evaluate_segmentation(REAL_DATASET, 0, **_real_options(methods=["codebrain"],
                                                                    cases=real_held_back_slabs.folder))
    table = result.table
    assert table["segmenter"] == str(real_segmenter.model) and table["segmenter_folds"] == ["all"]
    assert table["rows"] == ["zero-fill", "codebrain", "full"]
    assert table["columns"] == ["T1", "T2", "FLAIR", "T1Gd", "mean"]
    assert table["cases"] == cases and sorted(cases) == sorted(real_segmenter.split["val"])
    assert (result.predicted, result.reused) == (len(cases) * 9, 0)  # full + 4 scenarios x (zero-fill, CodeBrain)
    assert result.imputed == len(cases) * 8
    for name in ("per_case", "markdown", "csv", "json", "figure"):
        assert result.files[name].is_file()
    with open(result.files["per_case"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(cases) * 9 and {r["input"] for r in rows} == {"zero-fill", "codebrain", "full"}
    for row in ("zero-fill", "codebrain"):
        for region in ("WT", "TC", "ET", "mean of regions"):
            cells = table["dice"][row][region]
            assert all(0.0 <= cells[c] <= 1.0 for c in table["columns"]), (row, region)
            assert cells["mean"] == pytest.approx(np.mean([cells[c] for c in ("T1", "T2", "FLAIR", "T1Gd")]))
        assert all(0.0 <= table["hd95"][row]["mean of regions"][c] for c in table["columns"])
    full = table["dice"]["full"]["mean of regions"]["mean"]
    zero = table["dice"]["zero-fill"]["mean of regions"]["mean"]
    codebrain = table["dice"]["codebrain"]["mean of regions"]["mean"]
    print(f"\nreal data: mean Dice full {full:.3f}, CodeBrain {codebrain:.3f}, zero-fill {zero:.3f}; "
          f"{result.predicted} segmentations and {result.imputed} imputations in {time.monotonic() - start:.0f} s\n"
          f"{result.files['markdown'].read_text()}")
    assert full > zero


@pytest.mark.slow
def test_real_cases_all_scenarios(real_segmenter, real_held_back_slabs):
    """All 14 missing patterns of the held-back slabs for zero-fill and CodeBrain (longer: -m slow)."""
    result = evaluate_segmentation(REAL_DATASET, 0, **_real_options(methods=["codebrain"], scenarios="all",
                                                                    cases=real_held_back_slabs.folder))
    table = result.table
    assert len(table["columns"]) == 15 and table["rows"] == ["zero-fill", "codebrain", "full"]
    full = table["dice"]["full"]["mean of regions"]["mean"]
    assert full > table["dice"]["zero-fill"]["mean of regions"]["mean"]
    print(f"\n{result.files['markdown'].read_text()}")
