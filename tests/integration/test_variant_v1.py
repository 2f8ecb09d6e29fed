"""Issue 7: the CodeBrain v1 variant (per-modality codes), the code-dimension switch, and choosing a variant's
folder at imputation / evaluation time.

Unit tests of the v1 code layout, the source rule and the names, then the v1 variant and ``--code-dim`` runs trained
for a few tens of iterations (one thread) on tiny demo data and used through the predictor, ``codebrain_impute``
and the imputation evaluation.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_DEMO_CONFIGURATION, use_project_folders

from codebrain_seg.cli.impute import main as impute_main
from codebrain_seg.cli.train import main as train_main
from codebrain_seg.inference.codebrain import (
    CodeBrainPredictor,
    load_predictor_from_folder,
)
from codebrain_seg.io import read_json
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder, StageOneModel
from codebrain_seg.networks.codebrain import choose_sources
from codebrain_seg.run.training import run_training
from evaluation.imputation.evaluate import evaluate_imputation
from trainers.base_trainer import read_metrics

DATASET_ID = 977
CONFIG = TINY_DEMO_CONFIGURATION
TINY_NETWORK = {"posterior_width": 8, "common_width": 8, "decoder_width": 8, "depth": 1}
SMALL = dict(posterior_width=4, common_width=4, decoder_width=4, depth=1)
QUICK = dict(device="cpu", num_threads=1, max_val_slices_per_case=4, log_every=1)
V1_GRID = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])  # FSQ codes of L = 5 levels


# ---- the v1 code layout ------------------------------------------------------------------------------------


# ---- trained variants on demo data ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tiny_demo) -> SimpleNamespace:
    """Demo dataset (5 cases of 48 x 48 x 24) with the tiny configuration."""
    return tiny_demo(DATASET_ID, TINY_NETWORK)


@pytest.fixture(scope="module")
def v1_model(demo: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The v1 variant trained once (Stage I 40, Stage II 30 iterations, one thread) into its own results folder."""
    results = tmp_path_factory.mktemp("v1_results")
    with pytest.MonkeyPatch.context() as patch:
        use_project_folders(demo.root, patch)
        patch.setenv("codebrain_results", str(results))
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run_training(DATASET_ID, 0, CONFIG, stage=1, variant="v1", iterations=40, val_every=20, **QUICK)
            run_training(DATASET_ID, 0, CONFIG, stage=2, variant="v1", iterations=30, val_every=30, **QUICK)
        finally:
            torch.set_num_threads(before)
    fold_dir = next(results.glob(f"Dataset{DATASET_ID}_*")) / f"CodeBrain-v1__codebrainPlans__{CONFIG}" / "fold_0"
    return SimpleNamespace(results=results, fold_dir=fold_dir, **vars(demo))


@pytest.fixture
def v1_project(v1_model: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The project variables pointing at the v1 model's folders; one torch thread."""
    use_project_folders(v1_model.root, monkeypatch)
    monkeypatch.setenv("codebrain_results", str(v1_model.results))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield v1_model
    torch.set_num_threads(before)


def test_v1_trains_both_stages_and_records_its_layout(v1_project: SimpleNamespace) -> None:
    names = v1_project.plans["channel_names"]
    stage1 = torch.load(v1_project.fold_dir / "stage1" / "checkpoint_final.pth", map_location="cpu",
                        weights_only=True)
    assert stage1["network_config"]["variant"] == "v1" and stage1["network_config"]["fsq_levels"] == [5] * 7
    assert stage1["identity"]["variant"] == "v1" and stage1["options"]["variant"] == "v1"
    assert stage1["loss_weights"]["lambda_available"] == 0.0
    relevance = stage1["source_relevance"]  # the v1 paper's Table 4: every source x anchor pair
    assert sorted(relevance) == sorted(names)
    assert all(sorted(row) == sorted(set(names) - {source}) for source, row in relevance.items())
    records = read_metrics(v1_project.fold_dir / "stage1")
    train = [r["losses"] for r in records if r["kind"] == "train"]
    assert all("loss_rec_available" not in losses for losses in train)
    # loss_rec = lambda_m (20) x the anchor's PSNR loss
    assert all(losses["loss_rec"] == pytest.approx(20 * losses["loss_rec_missing"], rel=1e-4) for losses in train)
    early = np.mean([losses["train_psnr_missing"] for losses in train[:10]])
    late = np.mean([losses["train_psnr_missing"] for losses in train[-10:]])
    assert late > early + 1.0, (early, late)  # Stage I learns to rebuild the anchor
    validation = [r for r in records if r["kind"] == "val"]
    assert [r["iteration"] for r in validation] == [20, 40]
    assert len(validation[-1]["pairs"]) == len(names) * (len(names) - 1)
    stage2 = torch.load(v1_project.fold_dir / "stage2" / "checkpoint_final.pth", map_location="cpu",
                        weights_only=True)
    assert stage2["network_config"]["variant"] == "v1" and stage2["source_relevance"] == relevance
    assert stage2["networks"]["prior_encoder"]["encoder.projection.weight"].shape[0] == len(names) * 7 * 4
    last = [r for r in read_metrics(v1_project.fold_dir / "stage2") if r["kind"] == "val"][-1]
    assert 0 < last["code_accuracy"] <= 1 and np.isfinite(last["psnr"])


def test_v1_predictor_imputes_with_random_and_relevant_sources(v1_project: SimpleNamespace) -> None:
    predictor = CodeBrainPredictor.from_results(DATASET_ID, 0, CONFIG, variant="v1")
    assert predictor.model_info["model_folder"] == str(v1_project.fold_dir)
    volume = np.load(v1_project.data / f"{v1_project.split['val'][0]}.npy")
    available = [True, False, True, False]
    imputed = predictor.impute_normalised(volume, available)
    assert np.array_equal(imputed[[0, 2]], volume[[0, 2]]) and np.isfinite(imputed).all()
    assert imputed[[1, 3]].max() > 0 and imputed[[1, 3]].min() >= 0 and imputed[[1, 3]].max() <= 1
    again = CodeBrainPredictor.from_results(DATASET_ID, 0, CONFIG, variant="v1").impute_normalised(volume, available)
    assert np.array_equal(imputed, again)  # the random sources are seeded
    middle = volume.shape[1] // 2
    full = np.ascontiguousarray(volume[:, middle - 1:middle + 1].transpose(1, 0, 2, 3))
    masked = full * np.array(available, np.float32)[None, :, None, None]
    result = predictor.predict_slices(masked, available=available)
    grid = tuple(v1_project.config["code_grid"])
    assert result["levels"].shape == (2, 28, *grid) and int(result["levels"].max()) <= 4
    assert predictor.oracle_levels(full).shape == (2, 28, *grid)
    assert result["confidence"].shape == (2, *grid)
    assert float(result["reconstruction"][:, [0, 2]].abs().max()) == 0.0  # given sequences are not decoded
    relevant = load_predictor_from_folder(v1_project.fold_dir, CONFIG, source_rule="relevant")
    table = relevant.relevance
    best = [max((s for s in (0, 2)), key=lambda s: float(table[s, t])) for t in range(4)]
    # The most relevant given source of T1Gd and FLAIR, chosen by the recorded Stage-I PSNRs.
    chosen = [best[t] for t in (1, 3)]
    sources = choose_sources(torch.tensor([available]), "relevant", table)[0]
    assert [int(sources[t]) for t in (1, 3)] == chosen
    assert relevant.impute_normalised(volume, available).shape == volume.shape
    assert relevant.model_info["source_rule"] == "relevant"


def test_impute_and_evaluate_pick_the_variant_folder(v1_project: SimpleNamespace, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    case = v1_project.split["val"][0]
    given = tmp_path / "in"
    given.mkdir()
    raw = next((v1_project.root / "raw").glob(f"Dataset{DATASET_ID}_*")) / "imagesTr"
    for channel in (0, 2):
        shutil.copy(raw / f"{case}_{channel:04d}.nii.gz", given)
    out = tmp_path / "out"
    # The plain method was never trained: without --variant the command says which folder it looked in.
    assert impute_main(["-d", str(DATASET_ID), "-f", "0", "-c", CONFIG, "-i", str(given), "-o", str(out)]) == 2
    assert f"CodeBrain__codebrainPlans__{CONFIG}" in capsys.readouterr().err
    assert impute_main(["-d", str(DATASET_ID), "-f", "0", "-i", str(given), "-o", str(out), "--variant", "v1",
                        "--save-confidence", "--source-rule", "relevant"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{case}_0001.nii.gz", f"{case}_0003.nii.gz", f"{case}_imputation.json", "confidence"])
    sidecar = read_json(out / f"{case}_imputation.json")
    assert sidecar["model"]["model_folder"] == str(v1_project.fold_dir) and sidecar["model"]["variant"] == "v1"
    assert sidecar["model"]["configuration"] == CONFIG and sidecar["model"]["source_rule"] == "relevant"

    evaluated = evaluate_imputation(DATASET_ID, 0, cases="val", protocols=["paper"], methods=["codebrain", "zero"],
                                    patterns=["1000", "0101"], evaluation_slices=4, variant="v1")
    assert evaluated == v1_project.fold_dir / "imputation_eval" / "val"
    summary = read_json(evaluated / "summary.json")
    assert summary["model_folder"] == f"CodeBrain-v1__codebrainPlans__{CONFIG}"
    assert summary["variant"]["variant"] == "v1"
    assert summary["methods"]["codebrain"]["model"]["model_folder"] == str(v1_project.fold_dir)
    assert (evaluated / "figures" / "codes_0101.png").stat().st_size > 1000
    overall = summary["summary"]["paper"]["image"]
    assert overall["codebrain"]["overall"]["psnr"] > overall["zero"]["overall"]["psnr"]
    assert not (v1_project.fold_dir.parents[1] / f"CodeBrain__codebrainPlans__{CONFIG}").exists()


def test_code_dim_runs_give_code_maps_with_d_channels(demo: SimpleNamespace, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    use_project_folders(demo.root, monkeypatch)
    monkeypatch.setenv("codebrain_results", str(tmp_path))
    common = ["-d", str(DATASET_ID), "-f", "0", "-c", CONFIG, "--device", "cpu", "--iterations", "2",
              "--val-every", "2", "--log-every", "1", "--precision", "fp32"]
    assert train_main([*common, "--code-dim", "5"]) == 0
    assert train_main([*common, "--code-dim", "4", "--variant", "v1"]) == 0
    dataset = next(tmp_path.glob(f"Dataset{DATASET_ID}_*"))
    assert sorted(p.name.split("__")[0] for p in dataset.iterdir() if p.is_dir()) == ["CodeBrain-d5",
                                                                                      "CodeBrain-v1-d4"]
    volume = np.load(demo.data / f"{demo.split['val'][0]}.npy")
    full = np.ascontiguousarray(volume[:, 5:7].transpose(1, 0, 2, 3))
    grid = tuple(demo.config["code_grid"])
    for options, channels in (({"code_dim": 5}, 5), ({"code_dim": 4, "variant": "v1"}, 16)):
        predictor = CodeBrainPredictor.from_results(DATASET_ID, 0, CONFIG, **options)
        assert predictor.config.fsq_levels == (5,) * options["code_dim"]
        levels = predictor.predict_slices(full * np.array([1, 1, 0, 1], np.float32)[None, :, None, None])["levels"]
        assert levels.shape == (2, channels, *grid) and int(levels.max()) <= 4
        assert len(predictor.code_layout()["class_counts"]) == channels
    evaluated = evaluate_imputation(DATASET_ID, 0, CONFIG, protocols=["paper"], methods=["codebrain"],
                                    patterns=["1101"], evaluation_slices=2, code_dim=5)
    assert evaluated.parts[-4] == f"CodeBrain-d5__codebrainPlans__{CONFIG}"
    assert (evaluated / "figures" / "codes_1101.png").is_file()


def test_bad_variant_combinations_are_clear_errors(demo: SimpleNamespace, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, one_thread,
                                                   capsys: pytest.CaptureFixture) -> None:
    use_project_folders(demo.root, monkeypatch)
    monkeypatch.setenv("codebrain_results", str(tmp_path))
    with pytest.raises(ValueError, match="does not apply to the v1 variant"):
        run_training(DATASET_ID, 0, CONFIG, variant="v1", loss_weights="1,1", iterations=1, **QUICK)
    with pytest.raises(ValueError, match="the 'regression' method has none"):
        run_training(DATASET_ID, 0, CONFIG, method="regression", code_dim=5, iterations=1, **QUICK)
    for argv, message in ((["--code-dim", "0"], "code dimension must be an integer in 1..16"),
                          (["--variant", "v2"], "invalid choice: 'v2'")):
        with pytest.raises(SystemExit) as error_exit:
            train_main(["-d", str(DATASET_ID), "-f", "0", *argv])
        assert error_exit.value.code == 2 and message in capsys.readouterr().err
    # A Stage I of another variant found in the folder (e.g. copied by hand) is refused by Stage II.
    run_training(DATASET_ID, 0, CONFIG, stage=1, iterations=1, val_every=1, **QUICK)
    dataset = next(tmp_path.glob(f"Dataset{DATASET_ID}_*"))
    target = dataset / f"CodeBrain-v1__codebrainPlans__{CONFIG}" / "fold_0" / "stage1"
    target.mkdir(parents=True)
    shutil.copy(dataset / f"CodeBrain__codebrainPlans__{CONFIG}" / "fold_0" / "stage1" / "checkpoint_final.pth",
                target)
    with pytest.raises(ValueError, match="holds a 'cvpr' Stage I"):
        run_training(DATASET_ID, 0, CONFIG, stage=2, variant="v1", iterations=1, **QUICK)
    assert not (target.parent / "stage2" / "checkpoint_final.pth").exists()
    # The relevant-source rule needs the v1 table; a v1 model without it is refused.
    with pytest.raises(ValueError, match="needs the source x target table"):
        config = CodeBrainConfig(in_channels=4, fsq_levels=(5,) * 2, variant="v1", **SMALL)
        CodeBrainPredictor(StageOneModel(config), PriorEncoder(config), demo.plans, CONFIG, source_rule="relevant")
