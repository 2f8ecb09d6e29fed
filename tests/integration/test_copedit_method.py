"""CoPeDiT as a method of the harness: planner, both trainers on the one loop, imputation, resume, prompt switch.

Runs on the tiny demo project (5 phantom cases of 48 x 48 x 24, conftest ``tiny_demo``) with the planned CPU
configuration ``3d_copedit_cpu`` (64 x 64 x 32 volumes): both stages are trained once per module for a short run,
one thread (a slow module: -m slow). Its last test trains longer and
checks the issue's acceptance: CoPeDiT beats zero-fill on every missing pattern.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import torch_threads, use_project_folders

from codebrain_seg.cli.impute import main as impute_main
from codebrain_seg.cli.train import main as train_main
from codebrain_seg.inference.copedit import CoPeDiTImputer, load_copedit_from_folder
from codebrain_seg.inference.request import ImputationContext
from codebrain_seg.io import read_json
from codebrain_seg.run.methods import METHODS, get_imputer, get_method
from codebrain_seg.run.training import run_training
from planners.copedit_planner import (
    CPU_CONFIGURATION,
    PAPER_CONFIGURATION,
)
from planners.plan_and_preprocess import plan_and_preprocess
from trainers.base_trainer import TrainingOptions, read_metrics
from trainers.copedit.data import load_volumes
from trainers.copedit.stage1 import pretext_accuracy
from trainers.copedit.stage2 import (
    CoPeDiTStageOneNotFinishedError,
    MDiT3DTrainer,
    load_copevae,
)

# The module's fixture trains both stages (about 7 minutes of a 2-core CI machine): the whole module runs with
# -m slow; the default suite covers CoPeDiT's loop through the cardiac demo and the unit tests.
pytestmark = pytest.mark.slow

DATASET_ID = 981
SLOW_DATASET_ID = 982
TINY_NETWORK = {"posterior_width": 8, "common_width": 16, "decoder_width": 16, "depth": 1}  # the 2D plans' (unused)
ITERATIONS = {1: 200, 2: 150}
MODEL = f"CoPeDiT__codebrainPlans__{CPU_CONFIGURATION}"


def _train(project: SimpleNamespace, iterations: dict[int, int], **options) -> dict[int, Path]:
    folders = {}
    for stage, count in iterations.items():
        folders.update(run_training(project.dataset, 0, CPU_CONFIGURATION, stage=stage, method="copedit",
                                    iterations=count, val_every=count, device="cpu", num_threads=1, log_every=10,
                                    **options))
    return folders


@pytest.fixture(scope="module")
def trained(tiny_demo) -> SimpleNamespace:
    """The demo project with ``3d_copedit_cpu`` preprocessed and both CoPeDiT stages trained (short run)."""
    project = tiny_demo(DATASET_ID, TINY_NETWORK)
    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        use_project_folders(project.root, patch)
        plan_and_preprocess(DATASET_ID, [CPU_CONFIGURATION])
        project.dataset = DATASET_ID
        project.plans = read_json(project.preprocessed / "codebrainPlans.json")
        project.volume_config = project.plans["configurations"][CPU_CONFIGURATION]
        project.volumes = project.preprocessed / project.volume_config["data_identifier"]
        started = time.time()
        project.folders = _train(project, ITERATIONS)
        project.seconds = time.time() - started
        project.fold_dir = project.root / "results" / f"Dataset{DATASET_ID}_DemoBraTS" / MODEL / "fold_0"
        yield project


def test_planner_picks_the_cpu_target_and_records_reasons(trained: SimpleNamespace) -> None:
    configurations = trained.plans["configurations"]
    cpu, paper = configurations[CPU_CONFIGURATION], configurations[PAPER_CONFIGURATION]
    assert cpu["target_size"] == [64, 64, 32] and paper["target_size"] == [192, 192, 64]
    fingerprint = read_json(trained.preprocessed / "dataset_fingerprint.json")
    for config in (cpu, paper):
        assert config["kind"] == "3d_volume" and config["default_preprocessing"] is False
        assert all(size % 8 == 0 and size >= extent
                   for size, extent in zip(config["box_size"], fingerprint["max_brain_extent"]))
        for key in ("box_size", "target_size", "network", "batch_size", "iterations", "optimisers", "ema_decay"):
            assert config["reasons"][key], key
        assert config["optimisation"]["loss"] == {"lambda_missing": 1.0, "lambda_available": 1.0}
    assert "multiple of 8" in cpu["reasons"]["box_size"]
    assert cpu["network"]["volume_shape"] == [64, 64, 32]
    # the 2D configurations are untouched and CoPeDiT's arrays are written only for the named configuration
    assert {"2d", "2d_cpu", CPU_CONFIGURATION, PAPER_CONFIGURATION} <= set(configurations)
    assert not (trained.preprocessed / paper["data_identifier"]).exists()
    for case in trained.split["train"]:
        volume = np.load(trained.volumes / f"{case}.npy")
        assert volume.shape == (4, 64, 64, 32) and volume.dtype == np.float32
        assert 0.0 <= volume.min() and volume.max() <= 1.0


def test_both_stages_train_on_the_one_loop(trained: SimpleNamespace) -> None:
    assert set(trained.folders) == {1, 2}
    for stage in (1, 2):
        folder = trained.fold_dir / f"stage{stage}"
        for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "metrics.jsonl", "training_log.txt"):
            assert (folder / name).is_file(), name
        state = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=True)
        assert state["method"] == "copedit" and state["stage"] == stage
        assert state["iteration"] == ITERATIONS[stage]
    stage1 = [r for r in read_metrics(trained.fold_dir / "stage1") if r["kind"] == "train"]
    assert stage1[-1]["losses"]["loss_l1"] < 0.7 * stage1[0]["losses"]["loss_l1"]
    assert stage1[-1]["losses"]["codebook_perplexity"] > 4  # the restarts keep the codebook in use
    stage2 = [r for r in read_metrics(trained.fold_dir / "stage2") if r["kind"] == "train"]
    assert stage2[-1]["losses"]["loss_x0"] < 0.5 * stage2[0]["losses"]["loss_x0"]
    state = torch.load(trained.fold_dir / "stage2" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert set(state["ema"]) == set(state["networks"]["dit"])
    assert not all(torch.equal(state["ema"][k], state["networks"]["dit"][k]) for k in state["ema"])
    assert "vae" in state["frozen_networks"] and state["copedit_config"]["diffusion"]["latent_scale"] > 0
    cache = trained.fold_dir / "stage2" / "latent_cache"
    latents = np.load(cache / "latents.npy")
    assert latents.shape == (5, 4, 8, 8, 8, 4)  # every training and validation case, cached once
    print(f"\nCoPeDiT short run (stage 1 {ITERATIONS[1]} + stage 2 {ITERATIONS[2]} iterations): "
          f"{trained.seconds:.0f} s")


def test_pretext_heads_end_above_chance_on_the_training_data(trained: SimpleNamespace) -> None:
    vae, _, _ = load_copevae(trained.fold_dir / "stage1" / "checkpoint_final.pth", torch.device("cpu"))
    accuracy = pretext_accuracy(vae, load_volumes(trained.volumes, trained.split["train"]), torch.device("cpu"))
    print(f"\npretext accuracy on the training cases: {accuracy}")
    assert accuracy["position_accuracy"] > accuracy["position_chance"] + 0.05
    assert accuracy["count_accuracy"] > accuracy["count_chance"]  # better than always the most frequent count


def _write_case(trained: SimpleNamespace, folder: Path, case: str, given: list[int]) -> list[Path]:
    raw = trained.root / "raw" / f"Dataset{DATASET_ID}_DemoBraTS" / "imagesTr"
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(raw / f"{case}_{c:04d}.nii.gz", folder / f"{case}_{c:04d}.nii.gz")) for c in given]


def test_imputation_writes_only_the_missing_channels_on_the_input_grid(trained: SimpleNamespace,
                                                                        tmp_path: Path) -> None:
    case = trained.split["val"][0]
    inputs = _write_case(trained, tmp_path / "in", case, [0, 2])
    with pytest.MonkeyPatch.context() as patch:
        use_project_folders(trained.root, patch)
        assert impute_main(["-d", str(DATASET_ID), "-f", "0", "-i", str(tmp_path / "in"), "-o",
                            str(tmp_path / "out"), "--method", "copedit"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"{case}_0001.nii.gz", f"{case}_0003.nii.gz", f"{case}_imputation.json"]
    reference = nib.load(str(inputs[0]))
    given = np.stack([np.asarray(nib.load(str(p)).dataobj) for p in inputs])
    for name in written[:2]:
        image = nib.load(str(tmp_path / "out" / name))
        assert image.shape == reference.shape and np.allclose(image.affine, reference.affine)
        data = np.asarray(image.dataobj)
        assert np.isfinite(data).all() and data.max() > 0
        assert np.all(data[(given == 0).all(axis=0)] == 0)  # zero outside the given brain and the field of view
    sidecar = read_json(tmp_path / "out" / f"{case}_imputation.json")
    assert sidecar["method"] == "copedit" and sidecar["model"]["configuration"] == CPU_CONFIGURATION
    assert sidecar["model"]["prompts"] == "learned" and "median 99.5th" in sidecar["intensity_scale"]


class _Interrupted(MDiT3DTrainer):
    """Stage II that dies before iteration 5 (after the checkpoint of iteration 4)."""

    def train_step(self, x, available, iteration):
        if iteration == 5:
            raise RuntimeError("simulated crash")
        return super().train_step(x, available, iteration)


def test_stage2_resume_matches_an_uninterrupted_run(trained: SimpleNamespace, tmp_path: Path) -> None:
    split = trained.split
    extra = {"stage_dirs": {"1": str(trained.fold_dir / "stage1")}}

    def options(**changes) -> TrainingOptions:
        return TrainingOptions(iterations=8, device="cpu", save_every=4, val_every=100, num_threads=1,
                               extra=extra, **changes)

    with torch_threads(1):
        plain = MDiT3DTrainer(trained.plans, CPU_CONFIGURATION, trained.volumes, split, tmp_path / "a", options())
        plain.run()
        with pytest.raises(RuntimeError, match="simulated crash"):
            _Interrupted(trained.plans, CPU_CONFIGURATION, trained.volumes, split, tmp_path / "b", options()).run()
        resumed = MDiT3DTrainer(trained.plans, CPU_CONFIGURATION, trained.volumes, split, tmp_path / "b",
                                options(continue_training=True))
        resumed.run()
    a = torch.load(tmp_path / "a" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert a["iteration"] == b["iteration"] == 8
    for key in a["networks"]["dit"]:
        assert torch.allclose(a["networks"]["dit"][key], b["networks"]["dit"][key], atol=1e-6), key
        assert torch.allclose(a["ema"][key], b["ema"][key], atol=1e-6), key
    # a finished stage is not trained again
    again = MDiT3DTrainer(trained.plans, CPU_CONFIGURATION, trained.volumes, split, tmp_path / "b",
                          options(continue_training=True))
    again.run()
    assert torch.load(tmp_path / "b" / "checkpoint_final.pth", weights_only=True)["iteration"] == 8


def test_mask_prompt_switch_changes_the_prompts(trained: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        use_project_folders(trained.root, patch)
        # the mask ablation trains Stage II only and reuses the plain method's Stage I
        folders = run_training(DATASET_ID, 0, CPU_CONFIGURATION, method="copedit", ablation="mask", iterations=10,
                               val_every=10, device="cpu", num_threads=1)
        assert set(folders) == {2} and "CoPeDiT-mask__" in str(folders[2])
        context = ImputationContext(plans=trained.plans, dataset=f"Dataset{DATASET_ID}_DemoBraTS", fold=0,
                                    configuration="2d_cpu", options={"prompts": "mask"})
        masked = get_imputer("copedit", context)
        learned = get_imputer("copedit", ImputationContext(plans=trained.plans, dataset=context.dataset, fold=0,
                                                           configuration="2d_cpu"))
        # the registry's ``copedit-mask`` is the same model by name (what the evaluations' --methods take)
        by_name = get_imputer("copedit-mask", ImputationContext(plans=trained.plans, dataset=context.dataset, fold=0,
                                                                configuration="2d_cpu"))
        resolved = METHODS["copedit-mask"].configuration_for(context.dataset, 0, "cpu", {"prompts": "learned"})
    assert isinstance(masked, CoPeDiTImputer) and masked.predictor.prompt_source == "mask"
    assert by_name.predictor.prompt_source == "mask" and by_name.fingerprint() == masked.fingerprint()
    assert resolved == CPU_CONFIGURATION
    assert learned.predictor.prompt_source == "learned"
    assert masked.predictor.configuration_name == CPU_CONFIGURATION  # found from the 2D context
    volumes = [np.asarray(v) for v in load_volumes(trained.volumes, trained.split["train"][:2])]
    available = torch.tensor([[True, False, True, True]])
    prompts = {}
    for name, imputer in (("mask", masked), ("learned", learned)):
        predictor = imputer.predictor
        latents = [predictor.vae.encode(torch.from_numpy(v)[None]) for v in volumes]
        prompts[name] = [predictor.prompt_tokens(z, available) for z in latents]
    assert prompts["mask"][0].shape == (1, 1, 4)
    assert torch.equal(prompts["mask"][0], torch.tensor([[[0.0, 1.0, 0.0, 0.0]]]))
    assert torch.equal(prompts["mask"][0], prompts["mask"][1])  # a mask code knows only the pattern
    assert prompts["learned"][0].shape == (1, 3, 128)
    assert not torch.allclose(prompts["learned"][0], prompts["learned"][1])  # learned prompts see the images
    case = trained.split["val"][0]
    images = np.stack([np.asarray(nib.load(str(p)).dataobj, dtype=np.float32) for p in sorted(
        (trained.root / "raw" / f"Dataset{DATASET_ID}_DemoBraTS" / "imagesTr").glob(f"{case}_*.nii.gz"))])
    given = [True, False, True, True]
    assert not np.allclose(masked.impute(images, given)[1], learned.impute(images, given)[1])


def test_one_model_per_missing_count_layout(trained: SimpleNamespace) -> None:
    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        use_project_folders(trained.root, patch)
        folders = run_training(DATASET_ID, 0, CPU_CONFIGURATION, method="copedit", ablation="per_count",
                               iterations=6, val_every=6, device="cpu", num_threads=1)
        context = ImputationContext(plans=trained.plans, dataset=f"Dataset{DATASET_ID}_DemoBraTS", fold=0,
                                    configuration="2d_cpu", options={"layout": "per_count", "ddim_steps": 4})
        imputer = get_imputer("copedit", context)
    state = torch.load(folders[2] / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert state["layout"] == "per_count"
    assert {key.split(".")[1] for key in state["ema"]} == {"0", "1", "2"}  # one MDiT3D per missing count
    assert imputer.predictor.per_count and len(imputer.predictor.dit) == 3
    assert imputer.fingerprint()["checkpoints"]["stage2"][0] == (folders[2] / "checkpoint_final.pth").stat().st_size
    volume = np.asarray(load_volumes(trained.volumes, trained.split["val"])[0])
    for given in ([True, False, True, True], [False, True, False, False]):
        output = imputer.predictor.impute_volume(volume, given)
        assert np.array_equal(output[given], volume[given])  # the given sequences are kept exactly
        assert all(output[c].max() > 0 for c in range(4) if not given[c])


def test_ddp_two_ranks_per_count_stage2(trained: SimpleNamespace) -> None:
    """Two gloo ranks on the CPU: the per-count mask-prompt option trains Stage II (its Stage I is shared)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "codebrain_raw": str(trained.root / "raw"),
           "codebrain_preprocessed": str(trained.root / "preprocessed"),
           "codebrain_results": str(trained.root / "results")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "codebrain_seg.cli.train", "-d", str(DATASET_ID), "-f", "0", "--method", "copedit", "-c",
               CPU_CONFIGURATION, "--prompts", "mask", "--layout", "per_count", "--iterations", "4", "--val-every",
               "4", "--log-every", "1", "--device", "cpu"]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    folder = trained.fold_dir.parent.parent / f"CoPeDiT-mask-per_count__codebrainPlans__{CPU_CONFIGURATION}" / \
        "fold_0" / "stage2"
    state = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert state["world_size"] == 2 and state["iteration"] == 4 and state["layout"] == "per_count"
    assert state["copedit_config"]["prompt_source"] == "mask"
    assert not any(key.startswith("module.") for key in state["networks"]["dit"])
    train = [r for r in read_metrics(folder) if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    assert all(len(r["batch_keys"]) == 2 for r in train)


def test_bad_requests_are_clear_errors(trained: SimpleNamespace, tmp_path: Path, capsys) -> None:
    assert "copedit" in METHODS and get_method("copedit").configurations == (PAPER_CONFIGURATION,
                                                                                CPU_CONFIGURATION)
    with pytest.MonkeyPatch.context() as patch:
        use_project_folders(trained.root, patch)
        assert train_main(["-d", str(DATASET_ID), "-f", "0", "--method", "copedit", "-c", "2d_cpu"]) == 2
        assert "3D-volume configuration" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            train_main(["-d", str(DATASET_ID), "-f", "0", "--method", "copedit", "--ablation", "no_fc"])
        with pytest.raises(SystemExit):
            train_main(["-d", str(DATASET_ID), "-f", "0", "--prompts", "mask"])  # CodeBrain has no prompts
        with pytest.raises(CoPeDiTStageOneNotFinishedError):
            MDiT3DTrainer(trained.plans, CPU_CONFIGURATION, trained.volumes, trained.split, tmp_path / "s2",
                          TrainingOptions(iterations=2, device="cpu",
                                          extra={"stage_dirs": {"1": str(tmp_path / "none")}}))
        with pytest.raises(FileNotFoundError, match="codebrain_train --method copedit"):
            load_copedit_from_folder(tmp_path / "no_model")
    assert not (tmp_path / "s2").exists()


def _pattern_psnr(scores: Path) -> dict[tuple[str, str], float]:
    sums: dict[tuple[str, str], list[float]] = {}
    with open(scores) as handle:
        for row in csv.DictReader(handle):
            if row["region"] in ("image", "brain"):
                sums.setdefault((row["method"], row["pattern"]), []).append(float(row["psnr"]))
    return {key: float(np.mean(values)) for key, values in sums.items()}


def test_copedit_beats_zero_fill_on_every_pattern(tiny_demo) -> None:
    """Acceptance (issue 8): the CPU configuration trained longer imputes better than zero-fill on all 14 patterns
    (paper and volume protocols, the fold's validation case)."""
    from evaluation.imputation.evaluate import evaluate_imputation

    project = tiny_demo(SLOW_DATASET_ID, TINY_NETWORK)
    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        use_project_folders(project.root, patch)
        plan_and_preprocess(SLOW_DATASET_ID, [CPU_CONFIGURATION])
        project.dataset = SLOW_DATASET_ID
        started = time.time()
        iterations = {1: 600, 2: 1500}
        _train(project, iterations)
        trained_seconds = time.time() - started
        out = evaluate_imputation(SLOW_DATASET_ID, 0, "2d_cpu", "val", ["paper", "volume"], ["copedit", "zero"])
        total = time.time() - started
    fold_dir = project.root / "results" / f"Dataset{SLOW_DATASET_ID}_DemoBraTS" / MODEL / "fold_0"
    vae, _, _ = load_copevae(fold_dir / "stage1" / "checkpoint_final.pth", torch.device("cpu"))
    volumes = load_volumes(project.preprocessed / "codebrainPlans_3d_copedit_cpu", project.split["train"])
    accuracy = pretext_accuracy(vae, volumes, torch.device("cpu"))
    lines = [f"trained {iterations} in {trained_seconds:.0f} s, with evaluation {total:.0f} s",
             f"pretext accuracy (training cases): {json.dumps(accuracy)}"]
    for protocol in ("paper", "volume"):
        psnr = _pattern_psnr(out / f"scores_{protocol}.csv")
        patterns = sorted({pattern for _, pattern in psnr})
        assert len(patterns) == 14
        for pattern in patterns:
            lines.append(f"{protocol} {pattern}: CoPeDiT {psnr[('copedit', pattern)]:.2f} dB, "
                         f"zero-fill {psnr[('zero', pattern)]:.2f} dB")
        print("\n" + "\n".join(lines))
        for pattern in patterns:
            assert psnr[("copedit", pattern)] > psnr[("zero", pattern)], (protocol, pattern)
    assert accuracy["position_accuracy"] > accuracy["position_chance"] + 0.1
