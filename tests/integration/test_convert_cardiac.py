"""Cardiac converter on the real ACDC and M&Ms-2 volumes of ``../shared/data/cardiac`` (skips when absent).

Asserts: every subject's ED and ES frames become two cases ``<subject>_ED`` / ``<subject>_ES`` with byte-identical
images; ACDC labels are kept, M&Ms-2 labels 1 (LV) and 3 (RV) are swapped into the ACDC convention (voxel counts,
and the LV cavity is the label enclosed by myocardium in both datasets); dataset.json carries the task marker and
the subject rule; planning the real dataset gives the cardiac configurations (slice axis 2, a heart crop)
and splits that hold out whole subjects; a bad case (an unknown label value) refuses the conversion and writes nothing, ``skip_bad``
converts the others; the CLI exits with code 2 on a source without any subject folder.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from codebrain_seg.case_checks import CaseProblemsError
from codebrain_seg.cli.convert_cardiac import main as cli_main
from codebrain_seg.converters.cardiac import (
    CARDIAC_LABELS,
    MISSING_SLICES_TASK,
    SUBJECT_PATTERN,
    convert_cardiac,
    read_info_cfg,
)
from codebrain_seg.raw_dataset import subject_of_cases
from planners.plan_and_preprocess import plan_and_preprocess

REPO_ROOT = Path(__file__).resolve().parents[2]
CARDIAC_DIR = Path(os.environ.get("CODEBRAIN_CARDIAC_DATA", REPO_ROOT.parent / "shared" / "data" / "cardiac"))
ACDC_SUBJECTS = [f"patient{n:03d}" for n in (1, 11, 21, 31, 41, 51, 61, 71, 81, 91)]
MNMS_SUBJECT = "MnM2_001"


@pytest.fixture(scope="module")
def cardiac_dir() -> Path:
    """The real cardiac folder; skips the module's tests when it is absent."""
    if not (CARDIAC_DIR / MNMS_SUBJECT).is_dir():
        pytest.skip(f"real cardiac data folder {CARDIAC_DIR} is absent")
    return CARDIAC_DIR


def _labels(path: Path) -> np.ndarray:
    return np.rint(np.asarray(nib.load(str(path)).dataobj)).astype(np.int64)


def _enclosed_by_myocardium(label: np.ndarray, value: int) -> float:
    """Fraction of the one-voxel in-plane ring around ``value`` that is myocardium (2), over all slices."""
    ring_total, ring_myo = 0, 0
    for k in range(label.shape[2]):
        region = label[:, :, k] == value
        if not region.any():
            continue
        ring = ndimage.binary_dilation(region) & ~region
        ring_total += int(ring.sum())
        ring_myo += int((label[:, :, k][ring] == 2).sum())
    return ring_myo / max(ring_total, 1)


def test_real_acdc_and_mnms(cardiac_dir, project_dirs):
    report = convert_cardiac(cardiac_dir, 41)
    out = project_dirs["raw"] / "Dataset041_Cardiac"
    subjects = ACDC_SUBJECTS + [MNMS_SUBJECT]
    expected = sorted(f"{s}_{p}" for s in subjects for p in ("ED", "ES"))
    assert report.dataset_dir == out and sorted(report.converted) == expected == sorted(report.labelled)
    assert report.skipped == {}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "cine"} and meta["labels"] == CARDIAC_LABELS
    assert meta["task"] == MISSING_SLICES_TASK and meta["subject_pattern"] == SUBJECT_PATTERN
    assert meta["numTraining"] == 22 and meta["sources"] == ["acdc", "mnms"]
    grouping = subject_of_cases(meta, expected)
    assert grouping["patient081_ES"] == "patient081" and grouping["MnM2_001_ED"] == "MnM2_001"

    for subject in ACDC_SUBJECTS:
        info = read_info_cfg(cardiac_dir / subject / "Info.cfg")
        for phase in ("ED", "ES"):
            frame = f"{subject}_frame{int(info[phase]):02d}"
            image = out / "imagesTr" / f"{subject}_{phase}_0000.nii.gz"
            assert image.read_bytes() == (cardiac_dir / subject / f"{frame}.nii.gz").read_bytes()
            produced = nib.load(str(out / "labelsTr" / f"{subject}_{phase}.nii.gz"))
            assert produced.get_data_dtype() == np.uint8
            np.testing.assert_array_equal(_labels(out / "labelsTr" / f"{subject}_{phase}.nii.gz"),
                                          _labels(cardiac_dir / subject / f"{frame}_gt.nii.gz"))

    for phase in ("ED", "ES"):
        source = _labels(cardiac_dir / MNMS_SUBJECT / f"001_SA_{phase}_gt.nii.gz")
        produced = _labels(out / "labelsTr" / f"{MNMS_SUBJECT}_{phase}.nii.gz")
        assert (out / "imagesTr" / f"{MNMS_SUBJECT}_{phase}_0000.nii.gz").read_bytes() == (
            cardiac_dir / MNMS_SUBJECT / f"001_SA_{phase}.nii.gz").read_bytes()
        # the swap: source 1 (LV) -> 3, source 3 (RV) -> 1, myocardium and background kept
        np.testing.assert_array_equal(produced == 3, source == 1)
        np.testing.assert_array_equal(produced == 1, source == 3)
        np.testing.assert_array_equal(produced == 2, source == 2)
        np.testing.assert_array_equal(produced == 0, source == 0)
    assert int((_labels(out / "labelsTr" / f"{MNMS_SUBJECT}_ED.nii.gz") == 3).sum()) == 5702  # SOURCES.md: LV

    # after conversion the LV cavity (3) is the label enclosed by myocardium in both datasets, the RV (1) is not
    for case in ("patient001_ED", "MnM2_001_ED", "MnM2_001_ES"):
        label = _labels(out / "labelsTr" / f"{case}.nii.gz")
        assert _enclosed_by_myocardium(label, 3) > 0.8 > 0.5 > _enclosed_by_myocardium(label, 1), case


def test_plan_real_cardiac(cardiac_dir, project_dirs):
    convert_cardiac(cardiac_dir, 44)
    out = plan_and_preprocess(44)
    plans = json.loads((out / "codebrainPlans.json").read_text())
    assert plans["task"] == "missing_slices" and set(plans["configurations"]) == {"3d_cardiac", "3d_cardiac_cpu"}
    cpu = plans["configurations"]["3d_cardiac_cpu"]
    assert cpu["slice_axis"] == 2 and cpu["target_size"] == [64, 64, 16]
    assert 100 < cpu["in_plane_crop_mm"] < 260  # the heart with a margin, not the whole field of view
    fingerprint = json.loads((out / "dataset_fingerprint.json").read_text())
    assert all(case["label_bbox"] for case in fingerprint["cases"])
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 5
    for fold in splits:  # whole subjects held out: both frames of a subject on the same side
        val_subjects = {case.rsplit("_", 1)[0] for case in fold["val"]}
        assert not val_subjects & {case.rsplit("_", 1)[0] for case in fold["train"]}
        assert len(fold["val"]) == 2 * len(val_subjects)


def test_bad_case_refused_then_skipped(cardiac_dir, project_dirs, tmp_path):
    source = tmp_path / "cardiac_subset"
    source.mkdir()
    for subject in ("patient041", MNMS_SUBJECT):
        shutil.copytree(cardiac_dir / subject, source / subject)
    # an unknown label value in patient041's ES label
    gt = sorted((source / "patient041").glob("*_frame11_gt.nii.gz"))[0]
    image = nib.load(str(gt))
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = 4
    nib.save(nib.Nifti1Image(data, image.affine, image.header), str(gt))
    with pytest.raises(CaseProblemsError) as caught:
        convert_cardiac(source, 42)
    assert list(caught.value.problems) == ["patient041_ES"]
    assert "unknown label value(s) 4" in str(caught.value)
    assert not any(project_dirs["raw"].iterdir())  # nothing written, not even a staging folder
    report = convert_cardiac(source, 42, name="CardiacSubset", skip_bad=True)
    assert sorted(report.converted) == ["MnM2_001_ED", "MnM2_001_ES", "patient041_ED"]
    assert list(report.skipped) == ["patient041_ES"]


def test_cli_refuses_empty_source(tmp_path, project_dirs, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main([str(empty), "-d", "43"]) == 2
    assert "no subject folders" in capsys.readouterr().err
