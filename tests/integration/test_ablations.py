"""Ablation switches of issue 7: VQ codebook, continuous codes and the (lambda_m, lambda_a) pair.

Unit tests of the quantisers and the switches, then each variant trained for a few iterations (both stages) on
tiny demo data and imputed through the unchanged predictor. One thread, so timings hold on a busy machine.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_DEMO_CONFIGURATION

from codebrain_seg.inference.codebrain import load_predictor_from_folder
from codebrain_seg.run.training import run_training
from evaluation.imputation import figures
from trainers.base_trainer import read_metrics

SMALL = dict(posterior_width=4, common_width=4, decoder_width=4, depth=1)
DATASET_ID = 976
CONFIG = TINY_DEMO_CONFIGURATION
TINY_NETWORK = {"posterior_width": 8, "common_width": 8, "decoder_width": 8, "depth": 1}
TINY_CODEBOOK = 32
QUICK = dict(device="cpu", num_threads=1, max_val_slices_per_case=4)


@pytest.fixture
def one_thread():
    """One torch thread for in-process training (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- VQ quantiser ----------------------------------------------------------------------------------------


# ---- continuous codes --------------------------------------------------------------------------------------


# ---- switches, names, command line -------------------------------------------------------------------------


# ---- each variant trains and imputes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tiny_demo) -> SimpleNamespace:
    """Demo dataset (5 cases of 48 x 48 x 24), planned, with a tiny configuration and a 32-entry VQ codebook."""
    project = tiny_demo(DATASET_ID, TINY_NETWORK, vq_codebook_size=TINY_CODEBOOK)
    assert project.planned["vq_codebook_size"] == 1024  # the planner's documented default
    return project


@pytest.fixture
def results(demo: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh results folder for one test, with the demo's raw and preprocessed folders."""
    for kind in ("raw", "preprocessed"):
        monkeypatch.setenv(f"codebrain_{kind}", str(demo.root / kind))
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("codebrain_results", str(tmp_path))
    return tmp_path


def _fold_dir(results: Path, model: str) -> Path:
    return next(results.glob(f"Dataset{DATASET_ID}_*")) / f"{model}__codebrainPlans__{CONFIG}" / "fold_0"


def _checkpoints(stage_dir: Path) -> dict[str, dict]:
    """Every checkpoint of a stage, loaded as inference and resume do (weights only)."""
    files = sorted(stage_dir.glob("checkpoint_*.pth"))
    assert {f.name for f in files} == {"checkpoint_best.pth", "checkpoint_final.pth", "checkpoint_latest.pth"}
    return {f.name: torch.load(f, map_location="cpu", weights_only=True) for f in files}


def _impute_a_validation_case(demo: SimpleNamespace, fold_dir: Path) -> dict:
    """Impute two patterns of a validation case through the predictor; checks and returns its slice outputs."""
    predictor = load_predictor_from_folder(fold_dir, CONFIG)
    volume = np.load(demo.data / f"{demo.split['val'][0]}.npy")
    for available in ([True, False, True, False], [False, True, True, True]):
        imputed = predictor.impute_normalised(volume, available)
        assert imputed.shape == volume.shape and np.isfinite(imputed).all()
        assert np.array_equal(imputed[available], volume[available])
        missing = imputed[~np.array(available)]
        assert missing.min() >= 0.0 and missing.max() <= 1.0 and missing.max() > 0.0
    middle = volume.shape[1] // 2
    full = np.ascontiguousarray(volume[:, middle - 1:middle + 1].transpose(1, 0, 2, 3))
    masked = full * np.array([1, 0, 1, 0], np.float32)[None, :, None, None]
    result = predictor.predict_slices(masked)
    oracle = predictor.oracle_levels(full)
    # The evaluation's code-map figure, drawn as the model's config says (quantiser, classes per channel).
    layout = predictor.code_layout()
    figure = fold_dir / "codes.png"
    figures.code_map_figure(figure, full[0, 0], result["levels"][0].numpy(), oracle[0].numpy(),
                            result["confidence"][0].numpy() if "confidence" in result else None,
                            layout["class_counts"], quantizer=layout["quantizer"], groups=layout["groups"])
    assert figure.stat().st_size > 1000
    return {**result, "oracle": oracle, "supports_confidence": predictor.supports_confidence, "layout": layout}


def test_vq_variant_trains_both_stages_and_imputes(demo: SimpleNamespace, results: Path, one_thread) -> None:
    run_training(DATASET_ID, 0, CONFIG, ablation="vq", iterations=3, val_every=3, log_every=1, **QUICK)
    fold_dir = _fold_dir(results, "CodeBrain-vq")
    stage1 = _checkpoints(fold_dir / "stage1")["checkpoint_final.pth"]
    config = stage1["network_config"]
    assert (config["quantizer"], config["head"], config["codebook_size"]) == ("vq", "cls", TINY_CODEBOOK)
    assert stage1["networks"]["generator"]["quantizer.codebook"].shape == (TINY_CODEBOOK, 6)
    train = [r for r in read_metrics(fold_dir / "stage1") if r["kind"] == "train"]
    assert all(r["losses"]["loss_vq"] > 0 and 0 < r["losses"]["codebook_used"] <= 1 for r in train)
    stage2 = _checkpoints(fold_dir / "stage2")["checkpoint_final.pth"]
    assert stage2["network_config"]["head"] == "cls" and stage2["identity"]["ablation"] == "vq"
    assert stage2["networks"]["prior_encoder"]["encoder.projection.weight"].shape[0] == TINY_CODEBOOK
    validation = [r for r in read_metrics(fold_dir / "stage2") if r["kind"] == "val"][-1]
    assert 0 <= validation["code_accuracy"] <= 1 and 0 < validation["majority_accuracy"] <= 1
    result = _impute_a_validation_case(demo, fold_dir)
    assert not result["supports_confidence"]  # confidence needs the ordinal grading head
    levels = result["levels"]  # codebook indices, one per code cell
    grid = tuple(demo.config["code_grid"])
    assert levels.shape == (2, 1, *grid) and int(levels.min()) >= 0 and int(levels.max()) < TINY_CODEBOOK
    assert result["oracle"].shape == (2, 1, *grid)
    assert result["layout"]["quantizer"] == "vq" and result["layout"]["class_counts"] == [TINY_CODEBOOK]


def test_continuous_variant_trains_both_stages_and_imputes(demo: SimpleNamespace, results: Path,
                                                           one_thread) -> None:
    run_training(DATASET_ID, 0, CONFIG, ablation="continuous", iterations=3, val_every=3, log_every=1, **QUICK)
    fold_dir = _fold_dir(results, "CodeBrain-continuous")
    stage1 = _checkpoints(fold_dir / "stage1")["checkpoint_final.pth"]
    assert (stage1["network_config"]["quantizer"], stage1["network_config"]["head"]) == ("continuous", "regression")
    stage2 = _checkpoints(fold_dir / "stage2")["checkpoint_final.pth"]
    assert stage2["network_config"]["head"] == "regression"
    train = [r for r in read_metrics(fold_dir / "stage2") if r["kind"] == "train"]
    assert all(0 < r["losses"]["loss_code"] == pytest.approx(r["losses"]["train_code_mae"]) for r in train)
    validation = [r for r in read_metrics(fold_dir / "stage2") if r["kind"] == "val"][-1]
    assert 0 < validation["code_mae"] < 2 and "code_accuracy" not in validation
    result = _impute_a_validation_case(demo, fold_dir)
    assert not result["supports_confidence"] and "confidence" not in result
    assert result["layout"]["quantizer"] == "continuous" and result["layout"]["class_counts"] == []
    assert result["layout"]["groups"] == {"full stack": list(range(6))}
    codes = result["levels"]  # the predicted codes themselves
    assert codes.shape == (2, 6, *demo.config["code_grid"]) and codes.dtype == torch.float32 and float(codes.abs().max()) <= 1


def test_loss_weights_reach_the_stage1_loss_and_name_the_folder(demo: SimpleNamespace, results: Path,
                                                                one_thread) -> None:
    run_training(DATASET_ID, 0, CONFIG, loss_weights="1,1", iterations=3, val_every=3, log_every=1, **QUICK)
    fold_dir = _fold_dir(results, "CodeBrain-lm1-la1")
    stage1 = _checkpoints(fold_dir / "stage1")["checkpoint_final.pth"]
    assert stage1["loss_weights"] == {"lambda_missing": 1.0, "lambda_available": 1.0}
    assert stage1["identity"]["loss_weights"] == stage1["loss_weights"]
    train = [r["losses"] for r in read_metrics(fold_dir / "stage1") if r["kind"] == "train"]
    for losses in train:  # loss_rec = lambda_a * mean(available) + lambda_m * mean(missing), with (1, 1)
        assert losses["loss_rec"] == pytest.approx(losses["loss_rec_available"] + losses["loss_rec_missing"])
    assert _checkpoints(fold_dir / "stage2")["checkpoint_final.pth"]["identity"]["loss_weights"]["lambda_missing"] == 1
    assert _impute_a_validation_case(demo, fold_dir)["levels"].shape == (2, 6, *demo.config["code_grid"])  # FSQ
    # The plans' weights, given explicitly, are the plain method: its folder, the paper's (20, 5) in the loss.
    run_training(DATASET_ID, 0, CONFIG, stage=1, loss_weights=(20, 5), iterations=1, val_every=1, log_every=1,
                 **QUICK)
    plain = _fold_dir(results, "CodeBrain") / "stage1"
    losses = [r["losses"] for r in read_metrics(plain) if r["kind"] == "train"][0]
    assert losses["loss_rec"] == pytest.approx(5 * losses["loss_rec_available"] + 20 * losses["loss_rec_missing"])
    assert sorted(p.name.split("__")[0] for p in fold_dir.parents[1].iterdir() if p.is_dir()) == [
        "CodeBrain", "CodeBrain-lm1-la1"]
