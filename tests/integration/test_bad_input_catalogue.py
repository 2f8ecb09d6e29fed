"""The bad-input catalogue: what a new user gets wrong, and what every command must do about it.

Each row of :data:`REFUSED` is one mistake: the command, how the project is spoiled first, and the fragment the
one message must hold. Every row must end with exit code 2, a message on stderr naming the file / case / field
(no traceback), and no file of the project added, removed or changed (except the logs a row lists). The tests
after the table are the mistakes that are *handled* instead of refused (a fixed or replaced raw case makes new
plans and arrays, a truncated array is rebuilt, a rerun resumes, the minimal dataset.json recipe works).

The project is the tiny demo (5 phantom cases of 48 x 48 x 24, ``2d_tiny``) with a CodeBrain trained for a few
iterations, copied into each test's temp folder before it is spoiled. The count and outcomes are in
docs/reliability.md.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_DEMO_CONFIGURATION, torch_threads, use_project_folders

from codebrain_seg.cli.export_model import main as export_main
from codebrain_seg.cli.impute import main as impute_main
from codebrain_seg.cli.install_model import main as install_main
from codebrain_seg.cli.plan_and_preprocess import main as plan_main
from codebrain_seg.cli.train import main as train_main
from codebrain_seg.io import read_json, write_json
from codebrain_seg.raw_dataset import image_path, label_path

DATASET = 981  # the same tiny project as test_model_sharing (built once per session)
NAME = f"Dataset{DATASET}_DemoBraTS"
NETWORK = {"posterior_width": 8, "common_width": 8, "decoder_width": 8, "depth": 1}
CONFIG = TINY_DEMO_CONFIGURATION
MODEL = f"CodeBrain__codebrainPlans__{CONFIG}"
COMMANDS = {"plan": plan_main, "train": train_main, "impute": impute_main, "export": export_main,
            "install": install_main}


@pytest.fixture(scope="module")
def trained(tiny_demo) -> SimpleNamespace:
    """The tiny project with CodeBrain trained (4 iterations per stage) on fold 0."""
    from codebrain_seg.run.training import run_training

    demo = tiny_demo(DATASET, NETWORK)
    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        use_project_folders(demo.root, patch)
        run_training(DATASET, 0, CONFIG, iterations=4, device="cpu", num_threads=1, val_every=4,
                     max_val_slices_per_case=2)
    return demo


@pytest.fixture
def project(trained, tmp_path, monkeypatch) -> Callable[..., SimpleNamespace]:
    """``project(preprocessed=True, results=True)``: a copy of the trained project in ``tmp_path`` (the raw
    dataset always), its variables set, and an input folder of one case with T1Gd and FLAIR missing."""

    def make(preprocessed: bool = True, results: bool = True) -> SimpleNamespace:
        root = tmp_path / "project"
        for kind, wanted in (("raw", True), ("preprocessed", preprocessed), ("results", results)):
            if wanted:
                shutil.copytree(trained.root / kind, root / kind, ignore=shutil.ignore_patterns("*.png"))
        use_project_folders(root, monkeypatch)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        raw = root / "raw" / NAME
        case = min(trained.split["val"])
        inputs = tmp_path / "in"
        inputs.mkdir()
        for channel in (0, 2):
            shutil.copy(image_path(raw, case, channel), inputs / f"{case}_{channel:04d}.nii.gz")
        fold = root / "results" / NAME / MODEL / "fold_0"
        return SimpleNamespace(root=root, tmp=tmp_path, raw=raw, case=case, inputs=inputs, fold=fold,
                               plans=root / "preprocessed" / NAME / "codebrainPlans.json",
                               out=tmp_path / "out")

    return make


# ---- spoilers ---------------------------------------------------------------------------------------------


def _rewrite_image(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    image = nib.load(str(path))
    data = change(np.asarray(image.dataobj, dtype=np.float32))
    nib.save(nib.Nifti1Image(data, image.affine, image.header), str(path))


def label_seven(p):
    case = min(p.raw.glob("labelsTr/*.nii.gz")).name[:-len(".nii.gz")]
    image = nib.load(str(label_path(p.raw, case)))
    data = np.asarray(image.dataobj).copy()
    data[tuple(s // 2 for s in data.shape)] = 7
    nib.save(nib.Nifti1Image(data, image.affine, image.header), str(label_path(p.raw, case)))


def shape_mismatch(p):
    _rewrite_image(image_path(p.raw, p.case, 1), lambda data: data[:, :, :-2])


def all_zero(p):
    _rewrite_image(image_path(p.raw, p.case, 3), np.zeros_like)


def nan_voxels(p):
    def spoil(data):
        data[data.shape[0] // 2, data.shape[1] // 2, :] = np.nan
        return data
    _rewrite_image(image_path(p.raw, p.case, 2), spoil)


def list_channel_names(p):
    path = p.raw / "dataset.json"
    content = read_json(path)
    content["channel_names"] = list(content["channel_names"].values())
    write_json(path, content)


def truncate(relative: str, keep: float = 0.5) -> Callable:
    def spoil(p):
        path = p.fold / relative
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * keep)])
    return spoil


def corrupt_stage1_for_stage2(p):
    shutil.rmtree(p.fold / "stage2")
    truncate("stage1/checkpoint_final.pth")(p)


def edit_plans(path_of: Callable, where: list[str], value) -> Callable:
    def spoil(p):
        path = path_of(p)
        plans = read_json(path)
        node = plans
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        path.write_text(json.dumps(plans))  # json writes NaN as the literal NaN, as the old planner did
    return spoil


def unfinished_model(p):
    (p.fold / "stage2" / "checkpoint_final.pth").unlink()


def existing_output(p):
    (p.tmp / "model.zip").write_bytes(b"an earlier export")


def not_a_zip(p):
    (p.tmp / "model.zip").write_text("this is not a zip file")


def output_under_a_file(p):
    (p.tmp / "a_file").write_text("not a folder")


def nothing(p):
    pass


# ---- the catalogue ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mistake:
    """One row: ``command`` run with ``args`` (``{tmp}``, ``{in}``, ``{out}``, ``{model}`` filled in) after
    ``setup``; exit code 2 with every ``expected`` fragment in the message; ``may_change``: globs of files the
    refused run may touch (logs), relative to the project root."""

    name: str
    command: str
    args: tuple[str, ...]
    setup: Callable
    expected: tuple[str, ...]
    preprocessed: bool = True
    may_change: tuple[str, ...] = ()


PLAN = ("-d", str(DATASET), "-c", "2d_cpu", "--no-benchmark")  # timing steps is tested elsewhere
TRAIN = ("-d", str(DATASET), "-f", "0", "-c", CONFIG, "--device", "cpu")
IMPUTE = ("-d", str(DATASET), "-f", "0", "-c", CONFIG, "-i", "{in}", "-o", "{out}")
# What a refused training may touch: its log, and the plans / dataset.json copies beside the folds.
TRAIN_LOGS = ("results/*/training_log.txt", f"results/{NAME}/{MODEL}/plans.json", f"results/{NAME}/{MODEL}/dataset.json")
PLANS_JSON = (lambda p: p.plans)
MODEL_PLANS = (lambda p: p.fold.parent / "plans.json")

REFUSED = [
    # plan and preprocess: the integrity checks run by default, bad values are refused before anything is written
    Mistake("label value 7", "plan", PLAN, label_seven, ("unknown label value(s) 7",), preprocessed=False),
    Mistake("sequences of different shapes", "plan", PLAN, shape_mismatch, ("has shape", "but"), preprocessed=False),
    Mistake("all-zero sequence", "plan", PLAN, all_zero, ("FLAIR (DemoBraTS_000_0003.nii.gz) is all zero",), preprocessed=False),
    Mistake("NaN voxels", "plan", PLAN, nan_voxels, ("NaN",), preprocessed=False),
    Mistake("NaN voxels, checks skipped", "plan", PLAN + ("--no-verify",), nan_voxels,
            ("_0002.nii.gz has", "NaN or infinite voxel(s)"), preprocessed=False),
    Mistake("--gpu-memory-gb -1", "plan", PLAN + ("--gpu-memory-gb", "-1"), nothing,
            ("--gpu-memory-gb must be a positive number",), preprocessed=False),
    Mistake("-np 0", "plan", PLAN + ("-np", "0"), nothing, ("-np / --num-processes must be 1 or more",),
            preprocessed=False),
    Mistake("list-valued channel_names", "plan", PLAN, list_channel_names,
            ("dataset.json: channel_names must be an object keyed by channel number",), preprocessed=False),
    # training: values that used to mean "the plans' value", damaged checkpoints, edited plans
    Mistake("--iterations 0", "train", TRAIN + ("--iterations", "0"), nothing,
            ("--iterations must be a positive integer, got 0",)),
    Mistake("train --batch-size 0", "train", TRAIN + ("--batch-size", "0"), nothing,
            ("--batch-size must be a positive integer, got 0",)),
    Mistake("truncated checkpoint_latest, --continue", "train", TRAIN + ("--iterations", "4", "--continue"),
            truncate("stage1/checkpoint_latest.pth"), ("stage1/checkpoint_latest.pth cannot be read", "--overwrite"),
            may_change=TRAIN_LOGS),
    Mistake("empty checkpoint_latest, rerun", "train", TRAIN + ("--iterations", "4", "--stage", "2"),
            truncate("stage2/checkpoint_latest.pth", 0.0), ("stage2/checkpoint_latest.pth cannot be read",),
            may_change=TRAIN_LOGS),
    Mistake("truncated Stage I checkpoint for stage 2", "train", TRAIN + ("--iterations", "4", "--stage", "2"),
            corrupt_stage1_for_stage2, ("stage1/checkpoint_final.pth cannot be read",), may_change=TRAIN_LOGS),
    Mistake("hand-edited plans: crop_size", "train", TRAIN, edit_plans(PLANS_JSON, ["configurations", CONFIG,
            "crop_size"], ["forty", 48]), ("codebrainPlans.json", f"configurations.{CONFIG}.crop_size")),
    Mistake("NaN in the plans", "train", TRAIN, edit_plans(PLANS_JSON, ["intensity_reference", "T1", "median_p99_5"],
            float("nan")), ("codebrainPlans.json", "intensity_reference.T1.median_p99_5 is not a finite number")),
    # imputation
    Mistake("truncated Stage II checkpoint", "impute", IMPUTE, truncate("stage2/checkpoint_final.pth"),
            ("stage2/checkpoint_final.pth cannot be read as a CodeBrain Stage II checkpoint",)),
    Mistake("empty Stage II checkpoint", "impute", IMPUTE, truncate("stage2/checkpoint_final.pth", 0.0),
            ("stage2/checkpoint_final.pth cannot be read",)),
    Mistake("unwritable output folder", "impute", IMPUTE[:-1] + ("{tmp}/a_file/out",), output_under_a_file,
            ("output folder", "a_file/out cannot be written", "nothing was computed")),
    Mistake("impute --batch-size 0", "impute", IMPUTE + ("--batch-size", "0"), nothing,
            ("--batch-size must be a positive integer",)),
    Mistake("-m: no such folder", "impute", ("-m", "{tmp}/nowhere", "-i", "{in}", "-o", "{out}"), nothing,
            ("model folder", "nowhere does not exist",)),
    Mistake("neither -d nor -m", "impute", ("-i", "{in}", "-o", "{out}"), nothing, ("give the model: -d",)),
    Mistake("-m: hand-edited model plans", "impute", ("-m", "{model}", "-i", "{in}", "-o", "{out}"),
            edit_plans(MODEL_PLANS, ["configurations", CONFIG, "fsq_levels"], "8,8,8"),
            ("plans.json", f"configurations.{CONFIG}.fsq_levels must be a list of positive integers")),
    # sharing
    Mistake("export an unfinished model", "export", ("-d", str(DATASET), "-o", "{tmp}/model.zip"),
            unfinished_model, ("stage2/checkpoint_final.pth is missing", "has not finished Stage 2")),
    Mistake("export over an existing file", "export", ("-d", str(DATASET), "-o", "{tmp}/model.zip"),
            existing_output, ("model.zip exists",)),
    Mistake("install a file that is not a zip", "install", ("{tmp}/model.zip",), not_a_zip, ("is not a zip file",)),
]
if not torch.cuda.is_available():
    REFUSED.append(Mistake("--device cuda without a GPU", "plan", PLAN + ("--device", "cuda"), nothing,
                           ("--device cuda: no CUDA GPU is available",), preprocessed=False))


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _outside(p) -> dict[str, tuple[int, int]]:
    return {name: stamp for name, stamp in _files(p.tmp).items() if not name.startswith("project/")}


@pytest.mark.parametrize("mistake", REFUSED, ids=[m.name for m in REFUSED])
def test_mistake_is_refused_clearly_and_writes_nothing(mistake: Mistake, project, capsys):
    p = project(preprocessed=mistake.preprocessed)
    mistake.setup(p)
    before, outside = _files(p.root), _outside(p)
    args = [a.format(tmp=p.tmp, model=p.fold.parent, **{"in": p.inputs, "out": p.out}) for a in mistake.args]
    capsys.readouterr()
    with torch_threads(1):
        code = COMMANDS[mistake.command](args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "error: " in err, err
    message = err[err.index("error: "):].split("\r")[0]  # progress bars may share stderr
    for fragment in mistake.expected:
        assert fragment in message, message
    after = _files(p.root)
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert {name for name in changed if not any(fnmatch(name, glob) for glob in mistake.may_change)} == set()
    assert not p.out.exists()
    assert _outside(p) == outside  # nothing beside the project either (an output, a zip)


# ---- handled, not refused ---------------------------------------------------------------------------------


def test_fixed_nan_case_replans_and_the_plans_stay_finite(project):
    p = project(preprocessed=False, results=False)
    original = image_path(p.raw, p.case, 2).read_bytes()
    nan_voxels(p)
    assert plan_main(list(PLAN)) == 2
    image_path(p.raw, p.case, 2).write_bytes(original)  # the user fixes the case
    assert plan_main(list(PLAN)) == 0
    plans_text = p.plans.read_text()
    assert "NaN" not in plans_text and "Infinity" not in plans_text
    assert all(np.isfinite(v["median_p99_5"]) for v in json.loads(plans_text)["intensity_reference"].values())


def test_stale_plans_with_nan_are_written_again(project):
    p = project(results=False)
    edit_plans(PLANS_JSON, ["intensity_reference", "T1", "median_p99_5"], float("nan"))(p)
    assert plan_main(list(PLAN)) == 0
    assert np.isfinite(read_json(p.plans)["intensity_reference"]["T1"]["median_p99_5"])


def test_replaced_raw_image_gets_new_fingerprint_and_arrays(project):
    p = project(results=False)
    data = p.plans.parent / read_json(p.plans)["configurations"]["2d_cpu"]["data_identifier"]
    array = data / f"{p.case}.npy"
    old = np.load(array)
    old_stamp = array.stat().st_mtime_ns
    shutil.copy(image_path(p.raw, p.case, 2), image_path(p.raw, p.case, 0))  # T1 replaced by another image
    assert plan_main(list(PLAN)) == 0
    fingerprint = read_json(p.plans.parent / "dataset_fingerprint.json")
    stamp = image_path(p.raw, p.case, 0).stat()
    assert fingerprint["input_stamps"][f"imagesTr/{p.case}_0000.nii.gz"] == [stamp.st_size, stamp.st_mtime_ns]
    assert array.stat().st_mtime_ns != old_stamp and not np.array_equal(np.load(array), old)


def test_truncated_preprocessed_array_is_not_done(project):
    p = project(results=False)
    data = p.plans.parent / read_json(p.plans)["configurations"]["2d_cpu"]["data_identifier"]
    array = data / f"{p.case}.npy"
    full = np.load(array)
    others = {path.name: path.stat().st_mtime_ns for path in data.glob("*.npy") if not path.name.startswith(p.case)}
    array.write_bytes(array.read_bytes()[: array.stat().st_size // 2])
    assert plan_main(list(PLAN)) == 0
    assert np.array_equal(np.load(array), full)
    assert {path.name: path.stat().st_mtime_ns for path in data.glob("*.npy")
            if not path.name.startswith(p.case)} == others  # only the damaged case is made again


def test_rerun_without_continue_keeps_finished_and_overwrite_retrains(project, capsys):
    p = project()
    finals = {path: path.stat().st_mtime_ns for path in p.fold.glob("stage*/checkpoint_final.pth")}
    assert len(finals) == 2
    with torch_threads(1):
        assert train_main(list(TRAIN) + ["--iterations", "4"]) == 0  # "rerun the same command" after Ctrl-C
        assert {path: path.stat().st_mtime_ns for path in finals} == finals
        assert train_main(list(TRAIN) + ["--iterations", "2", "--stage", "1", "--overwrite", "--val-every", "2",
                                         "--save-every", "2"]) == 0
    stage1 = torch.load(p.fold / "stage1" / "checkpoint_final.pth", weights_only=True)
    assert stage1["iteration"] == 2
    assert (p.fold / "stage2" / "checkpoint_final.pth").stat().st_mtime_ns == \
        finals[p.fold / "stage2" / "checkpoint_final.pth"]


def test_interrupted_run_resumes_by_default(project):
    p = project()
    for path in p.fold.glob("stage1/checkpoint_*.pth"):
        path.unlink()
    options = ["--stage", "1", "--val-every", "2", "--save-every", "2"]
    with torch_threads(1):
        assert train_main(list(TRAIN) + ["--iterations", "2"] + options) == 0
        (p.fold / "stage1" / "checkpoint_final.pth").unlink()  # as if killed after the checkpoint at iteration 2
        assert train_main(list(TRAIN) + ["--iterations", "4"] + options) == 0
    log = (p.fold / "stage1" / "training_log.txt").read_text()
    assert "resuming from" in log and "at iteration 2 of 4" in log
    assert torch.load(p.fold / "stage1" / "checkpoint_final.pth", weights_only=True)["iteration"] == 4


def test_minimal_dataset_json_of_the_readme_is_accepted(project):
    p = project(preprocessed=False, results=False)
    shutil.rmtree(p.raw / "labelsTr")  # "optional labelsTr/CASE.nii.gz"; labels only for segmentation
    cases = len(list(p.raw.glob("imagesTr/*_0000.nii.gz")))
    (p.raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T1Gd", "2": "T2",
                                                                      "3": "FLAIR"},
                                                    "file_ending": ".nii.gz", "numTraining": cases}))
    assert plan_main(list(PLAN)) == 0
    assert read_json(p.plans)["channel_names"] == ["T1", "T1Gd", "T2", "FLAIR"]


def test_catalogue_size():
    assert len(REFUSED) >= 20
    assert len({m.name for m in REFUSED}) == len(REFUSED)


def test_install_refusal_leaves_no_partial_model(project, capsys, monkeypatch):
    """A zip whose checkpoint member is damaged inside the archive (bad CRC) is refused without a staging folder."""
    p = project()
    target = p.tmp / "model.zip"
    assert export_main(["-d", str(DATASET), "-o", str(target)]) == 0
    raw = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo(f"{NAME}/{MODEL}/fold_0/stage2/checkpoint_final.pth")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    use_project_folders(p.tmp / "fresh", monkeypatch)
    capsys.readouterr()
    assert install_main([str(target)]) == 2
    err = capsys.readouterr().err
    assert "stage2/checkpoint_final.pth" in err and "nothing was installed" in err
    assert list((p.tmp / "fresh" / "results").iterdir()) == []
