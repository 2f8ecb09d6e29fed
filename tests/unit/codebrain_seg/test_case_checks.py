"""Input checks shared by the converters: one problem sentence per defect, every bad case reported."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from codebrain_seg.case_checks import (
    CaseFiles,
    CaseProblemsError,
    ConversionReport,
    check_case,
    check_cases,
    prepare_target,
    select_good_cases,
)

LABELS = {0, 1, 2, 4}


def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a small NIfTI test image."""
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def good_case(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    rng = np.random.default_rng(0)
    images = {name: write(tmp_path / f"{name}.nii.gz", rng.random((8, 8, 8)).astype(np.float32))
              for name in ("t1", "t2")}
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:4, 2:4, 2:4] = 4
    label[4, 4, 4] = 1
    return images, write(tmp_path / "seg.nii.gz", label)


def test_good_case_has_no_problems(good_case):
    images, label = good_case
    assert check_case("A", images, label, LABELS) == []


def test_unreadable_file(good_case):
    images, label = good_case
    images["t2"].write_bytes(b"this is not a nifti file")
    problems = check_case("A", images, label, LABELS)
    assert len(problems) == 1 and problems[0].startswith("t2:") and "unreadable" in problems[0]


def test_missing_file_is_reported(good_case, tmp_path):
    images, label = good_case
    images["t2"] = tmp_path / "absent.nii.gz"
    assert check_case("A", images, label, LABELS) == [f"t2: file not found: {tmp_path / 'absent.nii.gz'}"]


def test_shape_mismatch_names_both_shapes(good_case):
    images, label = good_case
    write(images["t2"], np.ones((8, 8, 7), np.float32))
    assert check_case("A", images, label, LABELS) == ["t2 has shape (8, 8, 7) but t1 has (8, 8, 8)"]


def test_affine_mismatch_reports_distance_in_mm(good_case):
    images, label = good_case
    shifted = np.eye(4)
    shifted[0, 3] = 2.5
    write(images["t2"], np.ones((8, 8, 8), np.float32), shifted)
    problems = check_case("A", images, label, LABELS)
    assert problems == ["t2 affine differs from t1 by up to 2.5 mm (tolerance 0.001 mm)"]
    # Within tolerance (header rounding) passes; a larger tolerance accepts the shift.
    shifted[0, 3] = 1e-4
    write(images["t2"], np.ones((8, 8, 8), np.float32), shifted)
    assert check_case("A", images, label, LABELS) == []


def test_rotation_is_measured_at_the_corners(good_case):
    images, label = good_case
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # mirror about x = 0: the far corner moves by 2 * 7 mm
    write(images["t2"], np.ones((8, 8, 8), np.float32), flipped)
    assert "by up to 14 mm" in check_case("A", images, label, LABELS)[0]


def test_label_grid_is_checked_too(good_case):
    images, label = good_case
    write(label, np.zeros((8, 8, 9), np.uint8))
    assert check_case("A", images, label, LABELS) == ["label has shape (8, 8, 9) but t1 has (8, 8, 8)"]


def test_nonfinite_voxels_are_counted(good_case):
    images, label = good_case
    data = np.ones((8, 8, 8), np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    write(images["t1"], data)
    assert check_case("A", images, label, LABELS) == ["t1 has 3 NaN and 1 inf voxel(s)"]


def test_all_zero_sequence(good_case):
    images, label = good_case
    write(images["t2"], np.zeros((8, 8, 8), np.float32))
    assert check_case("A", images, label, LABELS) == ["t2 is all zero"]


def test_unknown_label_values_are_named(good_case):
    images, label = good_case
    data = np.zeros((8, 8, 8), np.int16)
    data[0, 0, 0], data[1, 1, 1] = 5, 3
    write(label, data)
    assert check_case("A", images, label, LABELS) == ["label has unknown label value(s) 3, 5 (allowed: 0, 1, 2, 4)"]


def test_fractional_and_negative_labels(good_case):
    images, label = good_case
    data = np.zeros((8, 8, 8), np.float32)
    data[0, 0, 0] = 0.5
    write(label, data)
    assert "non-integer" in check_case("A", images, label, LABELS)[0]
    data[0, 0, 0] = -1
    write(label, data)
    assert "unknown label value(s) -1" in check_case("A", images, label, LABELS)[0]


def test_several_problems_are_all_reported(good_case):
    images, label = good_case
    write(images["t1"], np.zeros((8, 8, 8), np.float32))
    write(label, np.full((8, 8, 8), 7, np.uint8))
    assert check_case("A", images, label, LABELS) == ["t1 is all zero",
                                                      "label has unknown label value(s) 7 (allowed: 0, 1, 2, 4)"]


def test_grid_checks_can_be_turned_off(good_case):
    images, _ = good_case
    write(images["t2"], np.ones((5, 6, 7), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    assert check_case("A", images, None, same_grid=False) == []


def test_check_cases_reports_every_bad_case(good_case, tmp_path):
    images, label = good_case
    bad_image = write(tmp_path / "zero.nii.gz", np.zeros((8, 8, 8), np.float32))
    cases = [CaseFiles("good", dict(images), label),
             CaseFiles("zero", {"t1": bad_image, "t2": images["t2"]}, label),
             CaseFiles("incomplete", {"t1": images["t1"]}, None, problems=["missing t2"])]
    problems = check_cases(cases, LABELS, progress=False)
    assert problems == {"zero": ["t1 is all zero"], "incomplete": ["missing t2"]}
    with pytest.raises(CaseProblemsError) as raised:
        select_good_cases(cases, problems, skip_bad=False)
    message = str(raised.value)
    assert "2 of 3 case(s)" in message and "zero:" in message and "- t1 is all zero" in message
    assert "incomplete:" in message and "- missing t2" in message and "--skip-bad" in message
    assert raised.value.problems == problems
    assert [c.case_id for c in select_good_cases(cases, problems, skip_bad=True)] == ["good"]


def test_no_good_case_left_raises_even_with_skip_bad():
    cases = [CaseFiles("a", {}, None, problems=["missing t1"])]
    with pytest.raises(CaseProblemsError, match="no case passed"):
        select_good_cases(cases, {"a": ["missing t1"]}, skip_bad=True)


def test_prepare_target_refuses_existing_and_reused_ids(project_dirs):
    raw = project_dirs["raw"]
    assert prepare_target(7, "Demo") == raw / "Dataset007_Demo"
    (raw / "Dataset007_Demo").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_target(7, "Demo")
    assert prepare_target(7, "Demo", overwrite=True) == raw / "Dataset007_Demo"
    with pytest.raises(FileExistsError, match="already used by"):
        prepare_target(7, "Other")
    with pytest.raises(ValueError, match="may hold only"):
        prepare_target(8, "bad_name")


def test_report_summary_fits_one_screen(tmp_path):
    report = ConversionReport(tmp_path / "Dataset001_X", converted=["a", "b"], labelled=["a"],
                              skipped={f"c{i:02d}": ["missing t1"] for i in range(30)})
    summary = report.summary()
    assert "Converted 2 case(s) (1 labelled, 1 without labels)" in summary
    assert "Skipped 30 bad case(s)" in summary and "c00: missing t1" in summary and "... and 18 more" in summary
    assert len(summary.splitlines()) < 25


def test_the_images_read_by_the_check_are_handed_to_the_caller(good_case, tmp_path):
    images, label = good_case
    loaded: dict = {}
    assert check_case("c1", {**images, "gone": tmp_path / "absent.nii.gz"}, label, LABELS, loaded=loaded) == [
        f"gone: file not found: {tmp_path / 'absent.nii.gz'}"]
    assert sorted(loaded) == ["t1", "t2"]  # the images that could be read; not the label
    assert np.array_equal(loaded["t1"].data, nib.load(str(images["t1"])).get_fdata().astype(np.float32))
