"""codebrain_export_model / codebrain_install_model / codebrain_impute -m: a trained model travels as one zip and
predicts from its folder alone; a tampered or zip-slip zip is refused with nothing written."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_DEMO_CONFIGURATION, use_project_folders

from codebrain_seg.cli.export_model import main as export_main
from codebrain_seg.cli.impute import main as impute_main
from codebrain_seg.cli.install_model import main as install_main
from codebrain_seg.io import read_nifti
from codebrain_seg.raw_dataset import image_path
from codebrain_seg.run.model_sharing import MANIFEST, sha256

DATASET = 981
NETWORK = {"posterior_width": 8, "common_width": 8, "decoder_width": 8, "depth": 1}
MODEL = f"CodeBrain__codebrainPlans__{TINY_DEMO_CONFIGURATION}"


@pytest.fixture(scope="module")
def exported(tiny_demo, tmp_path_factory) -> SimpleNamespace:
    """A tiny CodeBrain trained (a few iterations per stage), a case imputed with it, and the model exported."""
    from conftest import torch_threads

    from codebrain_seg.run.training import run_training

    demo = tiny_demo(DATASET, NETWORK)
    work = tmp_path_factory.mktemp("sharing")
    case = min(demo.split["val"])
    raw = demo.root / "raw" / f"Dataset{DATASET}_DemoBraTS"
    inputs = work / "in"
    inputs.mkdir()
    for channel in (0, 2):  # T1 and T2 given, T1Gd and FLAIR missing
        shutil.copy(image_path(raw, case, channel), inputs / f"{case}_{channel:04d}.nii.gz")
    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        use_project_folders(demo.root, patch)
        run_training(DATASET, 0, TINY_DEMO_CONFIGURATION, iterations=4, device="cpu", num_threads=1, val_every=4,
                     max_val_slices_per_case=2)
        assert impute_main(["-d", str(DATASET), "-f", "0", "-c", TINY_DEMO_CONFIGURATION, "-i", str(inputs),
                            "-o", str(work / "before")]) == 0
        assert export_main(["-d", str(DATASET), "-f", "0", "-o", str(work / "model.zip")]) == 0
    return SimpleNamespace(work=work, inputs=inputs, case=case, zip=work / "model.zip",
                           fold_dir=demo.root / "results" / f"Dataset{DATASET}_DemoBraTS" / MODEL / "fold_0")


@pytest.fixture
def fresh_results(tmp_path, monkeypatch) -> Path:
    """An empty results root in a fresh temp dir; no raw or preprocessed folder is set."""
    results = tmp_path / "results"
    results.mkdir()
    for variable in ("codebrain_raw", "codebrain_preprocessed", "nnUNet_raw", "nnUNet_preprocessed",
                     "nnUNet_results"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("codebrain_results", str(results))
    return results


def _rewrite(source: Path, target: Path, change) -> None:
    """Copy a zip member by member, ``change(name, data) -> [(name, data), ...]`` deciding what goes in."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            for out_name, data in change(name, old.read(name)):
                new.writestr(out_name, data)


def test_export_holds_final_checkpoints_and_a_manifest(exported):
    with zipfile.ZipFile(exported.zip) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read(MANIFEST))
    prefix = f"Dataset{DATASET}_DemoBraTS/{MODEL}"
    assert names == {MANIFEST, f"{prefix}/plans.json", f"{prefix}/dataset.json",
                     f"{prefix}/fold_0/stage1/checkpoint_final.pth", f"{prefix}/fold_0/stage2/checkpoint_final.pth"}
    assert set(manifest["files"]) == names - {MANIFEST}
    assert manifest["files"][f"{prefix}/fold_0/stage2/checkpoint_final.pth"]["sha256"] == sha256(
        exported.fold_dir / "stage2" / "checkpoint_final.pth")
    assert manifest["expects"]["channel_names"] == ["T1", "T1Gd", "T2", "FLAIR"]
    assert manifest["configuration"] == TINY_DEMO_CONFIGURATION and manifest["method"] == "codebrain"
    assert manifest["variant"]["folder_prefix"] == "CodeBrain" and manifest["torch_version"]
    assert "median 99.5th" in manifest["expects"]["intensity_scale"]


def test_installed_model_predicts_the_same_without_the_dataset(exported, fresh_results, capsys):
    assert install_main([str(exported.zip)]) == 0
    model = fresh_results / f"Dataset{DATASET}_DemoBraTS" / MODEL
    assert (model / "fold_0" / "stage2" / "checkpoint_final.pth").is_file()
    assert sorted(p.name for p in model.parent.iterdir()) == [MODEL]  # no staging folder left
    assert not (model / "fold_0" / "stage2" / "checkpoint_latest.pth").exists()
    out = exported.work / "after"
    assert impute_main(["-m", str(model), "-i", str(exported.inputs), "-o", str(out)]) == 0
    for channel in (1, 3):
        name = f"{exported.case}_{channel:04d}.nii.gz"
        before, after = read_nifti(exported.work / "before" / name), read_nifti(out / name)
        assert before.data.any() and np.array_equal(before.data, after.data)
        assert np.array_equal(before.affine, after.affine)
    # the fold folder works as well, and a second install is refused unless --overwrite
    assert impute_main(["-m", str(model / "fold_0"), "-i", str(exported.inputs), "-o", str(out)]) == 0
    capsys.readouterr()
    assert install_main([str(exported.zip)]) == 2
    assert "is installed already" in capsys.readouterr().err
    assert install_main([str(exported.zip), "--overwrite"]) == 0
    assert sorted(p.name for p in model.parent.iterdir()) == [MODEL]


def test_tampered_checkpoint_is_refused(exported, fresh_results, tmp_path, capsys):
    tampered = tmp_path / "tampered.zip"

    def flip(name, data):
        if name.endswith("stage2/checkpoint_final.pth"):
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            data = bytes(data)
        return [(name, data)]

    _rewrite(exported.zip, tampered, flip)
    assert install_main([str(tampered)]) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "stage2/checkpoint_final.pth" in err and "Traceback" not in err
    assert list(fresh_results.rglob("*")) == []


def test_zip_slip_and_missing_manifest_are_refused(exported, fresh_results, tmp_path, capsys):
    evil = tmp_path / "evil.zip"

    def slip(name, data):
        if name == MANIFEST:
            manifest = json.loads(data)
            manifest["files"]["../evil.txt"] = {"sha256": sha256_bytes(b"evil"), "size": 4}
            return [(name, json.dumps(manifest)), ("../evil.txt", b"evil")]
        return [(name, data)]

    _rewrite(exported.zip, evil, slip)
    assert install_main([str(evil)]) == 2
    err = capsys.readouterr().err
    assert "'../evil.txt' lies outside the model folder" in err and err.count("\n") == 1
    assert list(fresh_results.rglob("*")) == [] and not (fresh_results.parent / "evil.txt").exists()

    bare = tmp_path / "bare.zip"
    _rewrite(exported.zip, bare, lambda name, data: [] if name == MANIFEST else [(name, data)])
    assert install_main([str(bare)]) == 2
    assert f"has no {MANIFEST}" in capsys.readouterr().err
    assert list(fresh_results.rglob("*")) == []


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow  # about 2 CI-minutes beside the session's real model
def test_a_model_trained_on_real_cases_travels_and_imputes_a_real_case_the_same(real_model_cache, tmp_path,
                                                                                monkeypatch):
    """The session's CodeBrain trained on the real BraTS cases: a held-out real case imputed (T1Gd missing) before
    export and, after install into an empty results root of a fresh temp dir, from the model folder alone."""
    from conftest import REAL_CONFIGURATION, REAL_DATASET

    project = real_model_cache
    case = project.split["val"][0]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for channel in (0, 2, 3):
        shutil.copy(image_path(project.raw, case, channel), inputs / f"{case}_{channel:04d}.nii.gz")
    use_project_folders(project.root, monkeypatch)
    assert impute_main(["-d", str(REAL_DATASET), "-f", "0", "-c", REAL_CONFIGURATION, "-i", str(inputs),
                        "-o", str(tmp_path / "before")]) == 0
    archive = tmp_path / "real_model.zip"
    assert export_main(["-d", str(REAL_DATASET), "-f", "0", "-c", REAL_CONFIGURATION, "-o", str(archive)]) == 0
    fresh = tmp_path / "fresh" / "results"
    fresh.mkdir(parents=True)
    for variable in ("codebrain_raw", "codebrain_preprocessed", "nnUNet_raw", "nnUNet_preprocessed",
                     "nnUNet_results"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("codebrain_results", str(fresh))
    assert install_main([str(archive)]) == 0
    model = fresh / project.raw.name / f"CodeBrain__codebrainPlans__{REAL_CONFIGURATION}"
    assert impute_main(["-m", str(model), "-i", str(inputs), "-o", str(tmp_path / "after")]) == 0
    name = f"{case}_0001.nii.gz"
    before, after = read_nifti(tmp_path / "before" / name), read_nifti(tmp_path / "after" / name)
    assert before.data.any() and np.array_equal(before.data, after.data)
    assert np.array_equal(before.affine, after.affine)
