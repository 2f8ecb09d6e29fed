"""Interruptions: a real ``codebrain_plan_and_preprocess`` / ``codebrain_impute`` subprocess is stopped once its
first case is finished, then killed (SIGKILL) or interrupted (SIGINT, Ctrl-C); the rerun finishes the work, keeps
the cases that were complete (their files untouched) and never trusts a partial file.

The process is frozen with SIGSTOP the moment the first finished case appears, so the kill lands mid-run whatever
the machine's speed; the files complete at that moment are recorded before the signal is sent.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
from conftest import TINY_DEMO_CONFIGURATION, torch_threads, use_project_folders

from codebrain_seg.cli.evaluate_imputation import main as evaluate_main
from codebrain_seg.cli.impute import main as impute_main
from codebrain_seg.cli.plan_and_preprocess import main as plan_main
from codebrain_seg.demo_data import make_demo_dataset
from codebrain_seg.io import read_json, read_nifti
from codebrain_seg.raw_dataset import image_path

DATASET = 981  # the tiny trained project of test_model_sharing / the catalogue
NETWORK = {"posterior_width": 8, "common_width": 8, "decoder_width": 8, "depth": 1}
SIGNALS = [pytest.param(signal.SIGKILL, id="SIGKILL"), pytest.param(signal.SIGINT, id="SIGINT")]


def _stamps(paths) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in paths}


def interrupt_when(command: list[str], ready: Callable[[], list[Path]], sig: int, log: Path
                   ) -> tuple[int, dict[str, int]]:
    """Run ``command``; once ``ready()`` lists a finished file, freeze it (SIGSTOP), record the finished files'
    mtimes, send ``sig`` and let it go. Returns the exit code and the recorded mtimes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        # The child gets SIGINT's default disposition: a pytest process in which an earlier in-process test left
        # SIGINT ignored would pass that on, and Python installs no KeyboardInterrupt handler for an ignored signal.
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 300
        while process.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.002)
        assert process.poll() is None, f"finished before it could be interrupted:\n{log.read_text()[-2000:]}"
        os.kill(process.pid, signal.SIGSTOP)
        finished = _stamps(ready())
        os.kill(process.pid, sig)
        os.kill(process.pid, signal.SIGCONT)
        code = process.wait(timeout=120)
    return code, finished


@pytest.fixture(scope="module")
def plan_raw(tmp_path_factory) -> Path:
    """A demo dataset big enough for a kill to land between its cases (8 cases of 64 x 64 x 40)."""
    root = tmp_path_factory.mktemp("kill_plan")
    with pytest.MonkeyPatch.context() as patch:
        use_project_folders(root, patch)
        make_demo_dataset(991, num_cases=8, shape=(64, 64, 40), seed=1)
    return root


@pytest.mark.parametrize("sig", SIGNALS)
def test_plan_and_preprocess_resumes_after_a_kill(plan_raw, sig, tmp_path, monkeypatch):
    root = tmp_path / "project"
    shutil.copytree(plan_raw / "raw", root / "raw")
    use_project_folders(root, monkeypatch)
    arrays = root / "preprocessed" / "Dataset991_DemoBraTS" / "codebrainPlans_2d"
    code, finished = interrupt_when(
        [sys.executable, "-m", "codebrain_seg.cli.plan_and_preprocess", "-d", "991", "-c", "2d_cpu",
         "--no-benchmark"],
        lambda: sorted(arrays.glob("[!.]*.json")) if arrays.is_dir() else [], sig, tmp_path / "log.txt")
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), (tmp_path / "log.txt").read_text()[-2000:]
    if sig == signal.SIGINT:
        assert "interrupted: finished work is kept" in (tmp_path / "log.txt").read_text()
    done = sorted(finished)
    assert 1 <= len(done) < 8
    kept = {name: stamp for name, stamp in _stamps(arrays.glob("*")).items()
            if name.split(".")[0].split("_seg")[0] + ".json" in done}
    assert plan_main(["-d", "991", "-c", "2d_cpu", "--no-benchmark"]) == 0
    after = _stamps(arrays.glob("*"))
    assert {name: after[name] for name in kept} == kept  # the finished cases were not redone
    properties = sorted(arrays.glob("[!.]*.json"))
    assert len(properties) == 8
    for path in properties:  # every case complete and readable in full
        case = path.stem
        assert read_json(path) and np.load(arrays / f"{case}.npy").size > 0
        assert np.load(arrays / f"{case}_seg.npy").size > 0


@pytest.fixture(scope="module")
def impute_project(tiny_demo, tmp_path_factory):
    """The tiny trained CodeBrain, 8 input cases (4 phantom cases, twice under other ids) with T1Gd and FLAIR
    missing, and a reference imputation of them by an uninterrupted run."""
    from codebrain_seg.run.training import run_training

    demo = tiny_demo(DATASET, NETWORK)
    work = tmp_path_factory.mktemp("kill_impute")
    raw = demo.root / "raw" / f"Dataset{DATASET}_DemoBraTS"
    inputs = work / "in"
    inputs.mkdir()
    complete = work / "complete"
    complete.mkdir()
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in raw.glob("imagesTr/*_0000.nii.gz"))[:4]
    for copy in range(2):
        for case in cases:
            for channel in range(4):
                shutil.copy(image_path(raw, case, channel), complete / f"C{copy}{case}_{channel:04d}.nii.gz")
                if channel in (0, 2):
                    shutil.copy(image_path(raw, case, channel), inputs / f"C{copy}{case}_{channel:04d}.nii.gz")
    args = ["-d", str(DATASET), "-f", "0", "-c", TINY_DEMO_CONFIGURATION, "-i", str(inputs)]
    evaluate_args = ["-d", str(DATASET), "-f", "0", "-c", TINY_DEMO_CONFIGURATION, "--cases", str(complete),
                     "--methods", "zero,mean", "--figure-cases", "0", "--protocol", "paper",
                     "--evaluation-slices", "4"]  # the cache does not depend on the method: fast baselines
    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        use_project_folders(demo.root, patch)
        run_training(DATASET, 0, TINY_DEMO_CONFIGURATION, iterations=4, device="cpu", num_threads=1, val_every=4,
                     max_val_slices_per_case=2)
        assert impute_main(args + ["-o", str(work / "reference")]) == 0
        assert evaluate_main(evaluate_args + ["-o", str(work / "evaluation_reference")]) == 0
    return SimpleNamespace(demo=demo, args=args, reference=work / "reference", evaluate_args=evaluate_args,
                           evaluation_reference=work / "evaluation_reference")


@pytest.mark.parametrize("sig", SIGNALS)
def test_impute_folder_resumes_after_a_kill(impute_project, sig, tmp_path, monkeypatch):
    demo, args, reference = impute_project.demo, impute_project.args, impute_project.reference
    use_project_folders(demo.root, monkeypatch)
    out = tmp_path / "out"
    code, finished = interrupt_when([sys.executable, "-m", "codebrain_seg.cli.impute", *args, "-o", str(out)],
                                    lambda: sorted(out.glob("*_imputation.json")), sig, tmp_path / "log.txt")
    log = (tmp_path / "log.txt").read_text()
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), log[-2000:]
    assert 1 <= len(finished) < 8
    kept = {name: stamp for name, stamp in _stamps(out.glob("*")).items()
            if name.split("_")[0] + "_" + name.split("_")[1] + "_imputation.json" in finished}
    assert len(kept) == 3 * len(finished)  # the sidecar and the two imputed sequences of each finished case
    with torch_threads(1):
        assert impute_main(args + ["-o", str(out)]) == 0
    after = _stamps(out.glob("*"))
    assert {name: after[name] for name in kept} == kept  # finished cases kept, not imputed again
    assert sorted(after) == sorted(p.name for p in reference.glob("*"))  # no partial or temporary file left
    for path in reference.glob("*.nii.gz"):
        assert np.array_equal(read_nifti(out / path.name).data, read_nifti(path).data), path.name


@pytest.mark.parametrize("sig", SIGNALS)
def test_evaluate_imputation_resumes_after_a_kill(impute_project, sig, tmp_path, monkeypatch):
    project = impute_project
    use_project_folders(project.demo.root, monkeypatch)
    out = tmp_path / "evaluation"
    cache = out / ".cases"
    code, finished = interrupt_when(
        [sys.executable, "-m", "codebrain_seg.cli.evaluate_imputation", *project.evaluate_args, "-o", str(out)],
        lambda: sorted(cache.glob("[!.]*.json")), sig, tmp_path / "log.txt")
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), (tmp_path / "log.txt").read_text()[-2000:]
    assert 1 <= len(finished) < 8 and not (out / "summary.json").exists()
    with torch_threads(1):
        assert evaluate_main(project.evaluate_args + ["-o", str(out)]) == 0
    assert {name: stamp for name, stamp in _stamps(cache.glob("[!.]*.json")).items() if name in finished} == finished
    assert len(list(cache.glob("[!.]*.json"))) == 8 and not list(cache.glob(".*"))
    for name in ("scores_paper.csv", "pairs.csv", "summary.csv", "tables.md"):
        assert (out / name).read_text() == (project.evaluation_reference / name).read_text(), name
