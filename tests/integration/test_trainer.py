"""The CodeBrain trainer: data stream, learning of both stages, exact resume after SIGKILL, DDP, and errors.

Runs on tiny demo data (5 phantom cases of 48 x 48 x 24) with a tiny network configuration added to the plans,
one thread per process so that the timings hold on a busy 2-core machine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_DEMO_CONFIGURATION, use_project_folders

from codebrain_seg.cli.train import main as train_main
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder, StageOneModel
from codebrain_seg.run.training import run_training
from trainers.base_trainer import read_metrics
from trainers.data_loading import (
    close_batches,
    missing_patterns,
    training_batches,
)
from trainers.stage1 import score_patterns
from trainers.stage2 import impute

DATASET_ID = 971
CONFIG = TINY_DEMO_CONFIGURATION
TINY_NETWORK = {"posterior_width": 8, "common_width": 16, "decoder_width": 16, "depth": 1}
MODEL = f"CodeBrain__codebrainPlans__{CONFIG}"


@pytest.fixture(scope="module")
def demo(tiny_demo) -> SimpleNamespace:
    """Demo dataset, planned and preprocessed, with a tiny ``2d_tiny`` configuration added to the plans; the
    project variables point at it for the whole module (the subprocess tests inherit them)."""
    project = tiny_demo(DATASET_ID, TINY_NETWORK)
    with pytest.MonkeyPatch.context() as patch:
        use_project_folders(project.root, patch)
        yield project


@pytest.fixture
def results(demo: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh results folder for one test."""
    folder = tmp_path / "results"
    folder.mkdir()
    for kind in ("raw", "preprocessed"):
        monkeypatch.setenv(f"codebrain_{kind}", str(demo.root / kind))
    monkeypatch.setenv("codebrain_results", str(folder))
    return folder


def _stage_dir(results: Path, stage: int, model: str = MODEL) -> Path:
    return next(results.glob(f"Dataset{DATASET_ID}_*")) / model / "fold_0" / f"stage{stage}"


def _env(results: Path) -> dict[str, str]:
    return {**os.environ, "codebrain_results": str(results), "OMP_NUM_THREADS": "1"}


def _train_command(*extra: str) -> list[str]:
    return ["-m", "codebrain_seg.cli.train", "-d", str(DATASET_ID), "-f", "0", "-c", CONFIG, "--device", "cpu",
            *extra]


# ---- data stream -----------------------------------------------------------------------------------------


def test_stream_is_a_pure_function_of_seed_rank_and_iteration(demo: SimpleNamespace) -> None:
    args = (demo.data, demo.split["train"], 3, demo.config["crop_size"], 5)
    single = training_batches(*args, num_workers=0)
    uninterrupted = [next(single) for _ in range(6)]
    workers = training_batches(*args, num_workers=2)
    try:
        threaded = [next(workers) for _ in range(6)]
    finally:
        close_batches(workers)
    restarted = training_batches(*args, start_iteration=4)
    for expected, got in zip(uninterrupted, threaded):
        assert expected["iteration"] == got["iteration"] and np.array_equal(expected["data"], got["data"])
    for expected in uninterrupted[4:]:
        got = next(restarted)
        assert expected["iteration"] == got["iteration"] and np.array_equal(expected["data"], got["data"])
    # Ranks split each epoch like a DistributedSampler: no slice twice within the first epoch.
    ranks = [training_batches(*args, rank=rank, world_size=2, augment=False) for rank in (0, 1)]
    seen = [key for _ in range(3) for stream in ranks for key in next(stream)["keys"]]
    assert len(seen) == len(set(seen)) == 18


# ---- learning -------------------------------------------------------------------------------------------


def _load_checkpoints(folder: Path) -> dict[str, dict]:
    files = sorted(folder.glob("*.pth"))
    assert {f.name for f in files} == {"checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth"}
    return {f.name: torch.load(f, map_location="cpu", weights_only=True) for f in files}


def test_both_stages_learn_and_stage2_imputes_better_than_zero_fill(demo: SimpleNamespace, results: Path) -> None:
    common = dict(device="cpu", num_threads=1, val_every=50, validate_at_start=True)
    run_training(DATASET_ID, 0, CONFIG, stage=1, iterations=200, **common)
    stage1 = [r for r in read_metrics(_stage_dir(results, 1)) if r["kind"] == "val"]
    assert [r["iteration"] for r in stage1] == [0, 50, 100, 150, 200]
    assert stage1[-1]["psnr"] - stage1[0]["psnr"] >= 8.0, [r["psnr"] for r in stage1]

    run_training(DATASET_ID, 0, CONFIG, stage=2, iterations=200, **common)
    stage2 = [r for r in read_metrics(_stage_dir(results, 2)) if r["kind"] == "val"]
    assert stage2[-1]["code_accuracy"] >= stage2[-1]["majority_accuracy"] + 0.15, stage2[-1]
    assert stage2[-1]["code_accuracy"] > stage2[0]["code_accuracy"] + 0.3

    checkpoints = _load_checkpoints(_stage_dir(results, 2))
    _load_checkpoints(_stage_dir(results, 1))
    final = checkpoints["checkpoint_final.pth"]
    assert final["iteration"] == 200 and final["stage"] == 2 and final["configuration_name"] == CONFIG
    generator = StageOneModel(CodeBrainConfig.from_dict(final["network_config"]))
    generator.load_state_dict(final["frozen_networks"]["generator"])
    prior = PriorEncoder(CodeBrainConfig.from_dict(final["network_config"]))
    prior.load_state_dict(final["networks"]["prior_encoder"])
    generator.eval(), prior.eval()
    volume = np.load(demo.data / f"{demo.split['val'][0]}.npy")
    middle = volume.shape[1] // 2
    x = torch.from_numpy(np.ascontiguousarray(volume[:, middle - 4:middle + 4].transpose(1, 0, 2, 3)))
    names = demo.plans["channel_names"]
    patterns = missing_patterns(len(names))

    def predict(batch: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        masked = (batch.unsqueeze(0) * masks[:, None, :, None, None]).flatten(0, 1)
        return impute(generator, prior, masked)

    with torch.inference_mode():
        imputed = score_patterns([x], patterns, predict, names)["pairs"]
        zero = score_patterns([x], patterns, lambda b, m: torch.zeros(len(m) * len(b), *b.shape[1:]), names)["pairs"]
    assert len(imputed) == 28  # every (pattern, missing modality) pair of 4 modalities, as in the paper
    worse = {key: (imputed[key]["psnr"], zero[key]["psnr"]) for key in imputed
             if imputed[key]["psnr"] <= zero[key]["psnr"] + 1.0}
    assert not worse, worse


def test_ablations_get_their_own_folders(demo: SimpleNamespace, results: Path) -> None:
    quick = dict(iterations=3, device="cpu", num_threads=1)
    run_training(DATASET_ID, 0, CONFIG, stage="all", ablation="no_fc", **quick)
    state = torch.load(_stage_dir(results, 2, f"CodeBrain-no_fc__codebrainPlans__{CONFIG}") / "checkpoint_final.pth",
                       weights_only=True)
    assert state["network_config"]["use_fc"] is False
    run_training(DATASET_ID, 0, CONFIG, stage=1, ablation="l1", **quick)
    assert (_stage_dir(results, 1, f"CodeBrain-l1__codebrainPlans__{CONFIG}") / "checkpoint_final.pth").is_file()
    # 'cls' only changes Stage II, so it trains on (and, if needed, first trains) the plain Stage I.
    run_training(DATASET_ID, 0, CONFIG, stage="all", ablation="cls", **quick)
    assert (_stage_dir(results, 1) / "checkpoint_final.pth").is_file()
    state = torch.load(_stage_dir(results, 2, f"CodeBrain-cls__codebrainPlans__{CONFIG}") / "checkpoint_final.pth",
                       weights_only=True)
    assert state["network_config"]["head"] == "cls" and state["identity"]["ablation"] == "cls"
    assert not (_stage_dir(results, 1, f"CodeBrain-cls__codebrainPlans__{CONFIG}")).exists()


# ---- resume, errors, DDP --------------------------------------------------------------------------------


def test_sigkill_then_continue_matches_an_uninterrupted_run(demo: SimpleNamespace, tmp_path: Path) -> None:
    args = _train_command("--stage", "1", "--iterations", "60", "--save-every", "10", "--log-every", "5",
                          "--val-every", "20")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    subprocess.run([sys.executable, *args], env=_env(straight), check=True, capture_output=True, timeout=300)

    process = subprocess.Popen([sys.executable, *args], env=_env(resumed), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    latest = None
    while time.time() < deadline and process.poll() is None:
        found = list(resumed.glob(f"Dataset{DATASET_ID}_*/{MODEL}/fold_0/stage1/checkpoint_latest.pth"))
        if found:
            latest = found[0]
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert latest is not None, "no checkpoint appeared before the run ended"
    folder = latest.parent
    assert not (folder / "checkpoint_final.pth").exists(), "the run finished before it was killed"
    for checkpoint in folder.glob("checkpoint_*.pth"):
        torch.load(checkpoint, map_location="cpu", weights_only=True)  # none is corrupt
    start = torch.load(latest, map_location="cpu", weights_only=True)["iteration"]
    assert 10 <= start < 60

    finished = subprocess.run([sys.executable, *args, "--continue"], env=_env(resumed), capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    log = (folder / "training_log.txt").read_text()
    assert f"at iteration {start} of 60" in log and "resuming from" in log
    _load_checkpoints(folder)
    expected = read_metrics(_stage_dir(straight, 1))
    got = read_metrics(folder)
    assert [(r["kind"], r["iteration"]) for r in got] == [(r["kind"], r["iteration"]) for r in expected]
    for want, have in zip(expected, got):
        if want["kind"] == "train":
            assert have["batch_keys"] == want["batch_keys"]
            for name, value in want["losses"].items():
                assert have["losses"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), (want["iteration"], name)
        else:
            assert have["psnr"] == pytest.approx(want["psnr"], abs=1e-3)


def test_stage2_without_stage1_is_refused_and_writes_nothing(demo: SimpleNamespace, results: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    code = train_main(["-d", str(DATASET_ID), "-f", "0", "-c", CONFIG, "--stage", "2", "--device", "cpu"])
    assert code == 2
    error = capsys.readouterr().err
    assert "Stage II needs the finished Stage I" in error
    assert f"{MODEL}/fold_0/stage1/checkpoint_final.pth" in error
    assert list(results.rglob("*")) == []


def test_ddp_on_cpu_two_ranks_draw_different_slices_and_rank0_alone_writes(demo: SimpleNamespace,
                                                                           tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *_train_command("--stage", "1", "--iterations", "4", "--log-every", "1", "--save-every", "2",
                               "--val-every", "2")]
    finished = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    folder = _stage_dir(tmp_path, 1)
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint_best.pth", "checkpoint_final.pth", "checkpoint_latest.pth", "metrics.jsonl", "progress.png",
        "training_log.txt"]
    log = (folder / "training_log.txt").read_text()
    assert "world size 2" in log and log.count("stage 1 finished") == 1
    train = [r for r in read_metrics(folder) if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    for record in train:
        rank0, rank1 = record["batch_keys"]
        assert len(rank0) == len(rank1) == demo.config["batch_size"] and not set(rank0) & set(rank1)
    state = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert state["world_size"] == 2 and state["iteration"] == 4
    assert not any(key.startswith("module.") for key in state["networks"]["generator"])
