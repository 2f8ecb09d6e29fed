"""BraTS converter: real 2018 cases (byte-identical images, ET 4 -> 3), the 2023 naming, and every input defect."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from codebrain_seg.case_checks import CaseProblemsError
from codebrain_seg.cli.convert_brats import main
from codebrain_seg.converters.brats import convert_brats, remap_labels
from codebrain_seg.raw_dataset import RawDatasetWriter

REAL_CASES = ("Brats18_2013_11_1", "Brats18_CBICA_ABM_1", "TCGA-DU-7294")  # the last has no ET at all
OLD = ("t1", "t1ce", "t2", "flair")
NEW = ("t1n", "t1c", "t2w", "t2f")  # same order: T1, T1Gd, T2, FLAIR


def write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write a small NIfTI test image."""
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def make_case(root: Path, case_id: str, naming: str = "2018", label: bool = True, ext: str = ".nii.gz",
              seed: int = 0) -> Path:
    """A synthetic 8x8x8 case folder in the given BraTS naming; returns the folder."""
    folder = root / case_id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sep, names = ("_", OLD) if naming == "2018" else ("-", NEW)
    for name in names:
        write(folder / f"{case_id}{sep}{name}{ext}", rng.integers(1, 500, (8, 8, 8)).astype(np.int16))
    if label:
        seg = np.zeros((8, 8, 8), np.uint8)
        seg[1:3, 1:3, 1:3], seg[3:5, 3:5, 3:5] = 1, 2
        seg[5:7, 5:7, 5:7] = 4 if naming == "2018" else 3
        write(folder / f"{case_id}{sep}seg{ext}", seg)
    return folder


def raw_is_empty(raw: Path) -> bool:
    """No dataset and no staging folder were left behind."""
    return list(raw.iterdir()) == []


# ---------------------------------------------------------------------------------------------- real BraTS 2018


# ------------------------------------------------------------------------------------------ synthetic inputs


def test_synthetic_2023_keeps_et_and_unlabelled_cases_stay_in_images(project_dirs, tmp_path):
    make_case(tmp_path / "src", "A", "2023")
    make_case(tmp_path / "src", "B", "2023", label=False)
    report = convert_brats(tmp_path / "src", 40, name="Syn")
    assert report.converted == ["A", "B"] and report.labelled == ["A"]
    out = report.dataset_dir
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{c}_{i:04d}.nii.gz" for c in "AB"
                                                                    for i in range(4)]
    assert [p.name for p in (out / "labelsTr").iterdir()] == ["A.nii.gz"]
    label = np.asarray(nib.load(str(out / "labelsTr" / "A.nii.gz")).dataobj)
    assert sorted(np.unique(label)) == [0, 1, 2, 3] and (label == 3).sum() == 8
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2


def test_plain_nii_inputs_are_gzipped_byte_for_byte(project_dirs, tmp_path):
    folder = make_case(tmp_path / "src", "A", ext=".nii")
    report = convert_brats(tmp_path / "src", 41, name="Nii")
    for channel, sequence in enumerate(OLD):
        produced = report.dataset_dir / "imagesTr" / f"A_{channel:04d}.nii.gz"
        assert gzip.decompress(produced.read_bytes()) == (folder / f"A_{sequence}.nii").read_bytes()
    label = np.asarray(nib.load(str(report.dataset_dir / "labelsTr" / "A.nii.gz")).dataobj)
    assert (label == 3).sum() == 8 and 4 not in label


def test_ignored_files_are_reported_as_warnings(project_dirs, tmp_path):
    folder = make_case(tmp_path / "src", "A")
    (folder / "notes.txt").write_text("scanner notes")
    (folder / ".DS_Store").write_bytes(b"")
    (tmp_path / "src" / "name_mapping.csv").write_text("a,b\n")
    report = convert_brats(tmp_path / "src", 42, name="Warn")
    assert report.converted == ["A"]
    assert any("name_mapping.csv" in w for w in report.warnings)
    assert any("A: ignored non-image file notes.txt" in w for w in report.warnings)
    assert not any("DS_Store" in w for w in report.warnings)


def _unreadable(folder: Path) -> None:
    (folder / "Bad01_t1ce.nii.gz").write_bytes(b"garbage, not a NIfTI file")


def _shape(folder: Path) -> None:
    write(folder / "Bad01_t2.nii.gz", np.ones((8, 8, 7), np.int16))


def _affine(folder: Path) -> None:
    shifted = np.eye(4)
    shifted[1, 3] = 1.5
    write(folder / "Bad01_flair.nii.gz", np.ones((8, 8, 8), np.int16), shifted)


def _nan(folder: Path) -> None:
    data = np.ones((8, 8, 8), np.float32)
    data[0, 0, :2] = np.nan
    write(folder / "Bad01_t1.nii.gz", data)


def _zero(folder: Path) -> None:
    write(folder / "Bad01_t2.nii.gz", np.zeros((8, 8, 8), np.int16))


def _label5(folder: Path) -> None:
    seg = np.zeros((8, 8, 8), np.uint8)
    seg[0, 0, 0] = 5
    write(folder / "Bad01_seg.nii.gz", seg)


def _missing(folder: Path) -> None:
    (folder / "Bad01_t1ce.nii.gz").unlink()


def _unexpected(folder: Path) -> None:
    write(folder / "W39_1998.09.19_Segm.nii", np.ones((8, 8, 8), np.int16))  # as in BraTS 2020 case 355


DEFECTS = {
    "unreadable": (_unreadable, "t1ce: "),
    "shape": (_shape, "t2 has shape (8, 8, 7) but t1 has (8, 8, 8)"),
    "affine": (_affine, "flair affine differs from t1 by up to 1.5 mm"),
    "nan": (_nan, "t1 has 2 NaN and 0 inf voxel(s)"),
    "all_zero": (_zero, "t2 is all zero"),
    "unknown_label": (_label5, "unknown label value(s) 5 (allowed: 0, 1, 2, 4)"),
    "missing_sequence": (_missing, "missing t1ce"),
    "unexpected_file": (_unexpected, "unexpected image file W39_1998.09.19_Segm.nii"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_bad_case_stops_before_writing(defect, project_dirs, tmp_path, capsys):
    make_case(tmp_path / "src", "Good01")
    bad = make_case(tmp_path / "src", "Bad01", seed=1)
    damage, expected = DEFECTS[defect]
    damage(bad)
    code = main([str(tmp_path / "src"), "-d", "50", "--name", "Bad"])
    captured = capsys.readouterr()
    assert code == 2
    assert "1 of 2 case(s) failed the input checks" in captured.err and "Bad01:" in captured.err
    assert expected in captured.err and "Good01" not in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert raw_is_empty(project_dirs["raw"])


def test_every_bad_case_is_listed(project_dirs, tmp_path):
    make_case(tmp_path / "src", "Good01")
    _missing(make_case(tmp_path / "src", "Bad01"))
    bad02 = make_case(tmp_path / "src", "Bad02")
    write(bad02 / "Bad02_t2.nii.gz", np.zeros((8, 8, 8), np.int16))
    (bad02 / "Bad02_seg.nii.gz").write_bytes(b"\x00" * 10)
    with pytest.raises(CaseProblemsError) as raised:
        convert_brats(tmp_path / "src", 51, name="Bad")
    assert set(raised.value.problems) == {"Bad01", "Bad02"}
    assert raised.value.problems["Bad02"][0] == "t2 is all zero"
    assert raised.value.problems["Bad02"][1].startswith("label: ")
    assert raw_is_empty(project_dirs["raw"])


def test_old_naming_rejects_label_3_and_2023_naming_rejects_label_4(project_dirs, tmp_path):
    for naming, wrong in (("2018", 3), ("2023", 4)):
        folder = make_case(tmp_path / naming, "A", naming)
        seg = np.zeros((8, 8, 8), np.uint8)
        seg[0, 0, 0] = wrong
        write(next(folder.glob("*seg.nii.gz")), seg)
        with pytest.raises(CaseProblemsError, match=f"unknown label value\\(s\\) {wrong}"):
            convert_brats(tmp_path / naming, 52, name="Labels")
    assert raw_is_empty(project_dirs["raw"])


@pytest.mark.parametrize("layout, expected", [
    ("empty", "is empty"),
    ("files_only", "No case folders found"),
    ("unknown", "Unknown layout"),
    ("mixed", "Mixed BraTS naming conventions"),
    ("absent", "does not exist"),
])
def test_unusable_source_folder(layout, expected, project_dirs, tmp_path, capsys):
    source = tmp_path / "src"
    if layout != "absent":
        source.mkdir()
    if layout == "files_only":
        write(source / "A_t1.nii.gz", np.ones((8, 8, 8), np.int16))
    elif layout == "unknown":
        (source / "A").mkdir()
        write(source / "A" / "A_T1w.nii.gz", np.ones((8, 8, 8), np.int16))
    elif layout == "mixed":
        make_case(source, "A", "2018")
        make_case(source, "B", "2023")
    assert main([str(source), "-d", "53"]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(source) in err and "Traceback" not in err
    assert raw_is_empty(project_dirs["raw"])


def test_skip_bad_converts_the_good_cases(project_dirs, tmp_path, capsys):
    make_case(tmp_path / "src", "Good01")
    make_case(tmp_path / "src", "Unlabelled01", label=False)
    _missing(make_case(tmp_path / "src", "Bad01"))
    assert main([str(tmp_path / "src"), "-d", "54", "--name", "Skip", "--skip-bad"]) == 0
    out = capsys.readouterr().out
    dataset = project_dirs["raw"] / "Dataset054_Skip"
    assert "Converted 2 case(s) (1 labelled, 1 without labels)" in out and str(dataset) in out
    assert "Skipped 1 bad case(s)" in out and "Bad01: missing t1ce" in out
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["Good01.nii.gz"]
    assert len(list((dataset / "imagesTr").iterdir())) == 8
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 2


def test_existing_output_needs_overwrite(project_dirs, tmp_path, capsys):
    make_case(tmp_path / "src", "A")
    assert main([str(tmp_path / "src"), "-d", "55", "--name", "Again"]) == 0
    assert main([str(tmp_path / "src"), "-d", "55", "--name", "Again"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([str(tmp_path / "src"), "-d", "55", "--name", "Again", "--overwrite"]) == 0
    assert main([str(tmp_path / "src"), "-d", "55", "--name", "Other"]) == 2
    assert "already used by" in capsys.readouterr().err


def test_missing_raw_folder_variable_is_a_user_error(tmp_path, monkeypatch, capsys):
    for variable in ("codebrain_raw", "nnUNet_raw"):
        monkeypatch.delenv(variable, raising=False)
    make_case(tmp_path / "src", "A")
    assert main([str(tmp_path / "src"), "-d", "56"]) == 2
    assert "export codebrain_raw=" in capsys.readouterr().err


def test_interrupted_conversion_resumes(project_dirs, tmp_path, monkeypatch):
    for index, case_id in enumerate(("A", "B", "C")):
        make_case(tmp_path / "src", case_id, seed=index)
    original = RawDatasetWriter.write_case
    calls = []

    def failing_write(self, case_id, *args, **kwargs):
        calls.append(case_id)
        if len(calls) == 2:
            raise RuntimeError("simulated crash while writing the 2nd case")
        return original(self, case_id, *args, **kwargs)

    monkeypatch.setattr(RawDatasetWriter, "write_case", failing_write)
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert_brats(tmp_path / "src", 57, name="Resume")
    target = project_dirs["raw"] / "Dataset057_Resume"
    assert not target.exists()
    assert (project_dirs["raw"] / ".Dataset057_Resume.partial").is_dir()
    monkeypatch.setattr(RawDatasetWriter, "write_case", original)
    report = convert_brats(tmp_path / "src", 57, name="Resume")
    assert report.resumed == ["A"] and report.converted == ["A", "B", "C"]
    assert sorted(p.name for p in (target / "labelsTr").iterdir()) == ["A.nii.gz", "B.nii.gz", "C.nii.gz"]
    assert len(list((target / "imagesTr").iterdir())) == 12
    assert [p.name for p in project_dirs["raw"].iterdir()] == ["Dataset057_Resume"]


def test_rerun_drops_cases_that_became_bad(project_dirs, tmp_path, monkeypatch):
    for case_id in ("A", "B"):
        make_case(tmp_path / "src", case_id)
    original = RawDatasetWriter.write_case

    def crash_on_b(self, case_id, *args, **kwargs):
        if case_id == "B":
            raise RuntimeError("crash")
        return original(self, case_id, *args, **kwargs)

    monkeypatch.setattr(RawDatasetWriter, "write_case", crash_on_b)
    with pytest.raises(RuntimeError):
        convert_brats(tmp_path / "src", 58, name="Stale")
    monkeypatch.setattr(RawDatasetWriter, "write_case", original)
    # A was staged, now it is bad and skipped: it must not stay in the dataset.
    (tmp_path / "src" / "A" / "A_t1ce.nii.gz").unlink()
    report = convert_brats(tmp_path / "src", 58, name="Stale", skip_bad=True)
    assert report.converted == ["B"] and list(report.skipped) == ["A"]
    assert sorted(p.name for p in (report.dataset_dir / "imagesTr").iterdir())[0].startswith("B_")
    assert any("staged by an earlier run" in w for w in report.warnings)


def test_remap_labels_names_unknown_values():
    mapping = {0: 0, 1: 1, 2: 2, 4: 3}
    assert remap_labels(np.array([0, 1, 2, 4]), mapping).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        remap_labels(np.array([0, 3, 7, 0]), mapping)
