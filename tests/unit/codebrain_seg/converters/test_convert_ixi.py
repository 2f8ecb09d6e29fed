"""IXI converter: T1 and PD rigidly registered onto the T2 grid, layouts, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from codebrain_seg.case_checks import CaseProblemsError
from codebrain_seg.cli.convert_ixi import main
from codebrain_seg.converters.ixi import _to_sitk, convert_ixi, discover_ixi_cases
from codebrain_seg.io import Volume

N = 32
T2_AFFINE = np.array([[1.0, 0, 0, -10], [0, 1, 0, 5], [0, 0, 1, 3], [0, 0, 0, 1]])


def blobs(seed: int = 0) -> np.ndarray:
    """A smooth 'head': Gaussian blobs inside an ellipsoid, zero outside (N^3, float32)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(N)] * 3, indexing="ij"), -1).astype(float)
    centre = (N - 1) / 2
    head = (((grid - centre) / np.array([12, 13, 11])) ** 2).sum(-1) < 1
    image = np.zeros((N,) * 3)
    for _ in range(12):
        position, width = centre + rng.uniform(-8, 8, 3), rng.uniform(1.5, 4)
        image += rng.uniform(0.5, 1.5) * np.exp(-((grid - position) ** 2).sum(-1) / (2 * width ** 2))
    return ndimage.gaussian_filter((image + 0.3) * head, 0.7).astype(np.float32)


def rigidly_moved(image: np.ndarray, degrees: float = 5.0, shift: tuple[float, ...] = (3, 0, 0)) -> np.ndarray:
    """``image`` rotated about z through its centre and shifted (voxels), on the same grid."""
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    centre = (np.array(image.shape) - 1) / 2
    return ndimage.affine_transform(image, rotation, offset=centre - rotation @ centre - np.array(shift), order=1)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def write(path: Path, data: np.ndarray, affine: np.ndarray = T2_AFFINE) -> Path:
    """Write a NIfTI test image, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def make_subject(folder: Path, subject: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Write T2, a moved T1 and a re-gridded, shifted PD of one synthetic subject; returns the truths on T2 grid."""
    t2 = blobs(seed)
    truth = {"T1": np.where(t2 > 0, (t2.max() - t2) ** 1.5 + 0.2, 0).astype(np.float32),  # inverted contrast
             "T2": t2, "PD": np.where(t2 > 0, 0.7 * t2 + 0.5, 0).astype(np.float32)}
    write(folder / f"{subject}-T2.nii.gz", t2)
    # T1: same grid as T2, content moved by 5 degrees and 3 voxels.
    write(folder / f"{subject}-T1.nii.gz", rigidly_moved(truth["T1"]))
    # PD: another grid (x flipped, z cropped, as different orientations are in IXI) and 2.5 mm off in y.
    flip = np.eye(4)
    flip[0, 0], flip[0, 3], flip[2, 3] = -1, N - 1, 2
    pd_affine = T2_AFFINE @ flip
    pd_affine[1, 3] += 2.5
    write(folder / f"{subject}-PD.nii", truth["PD"][::-1, :, 2:30].copy(), pd_affine)
    return truth


def test_registration_puts_t1_and_pd_on_the_t2_grid(project_dirs, tmp_path):
    truth = make_subject(tmp_path / "src", "IXI002-Guys-0828")
    report = convert_ixi(tmp_path / "src", 60)
    out = project_dirs["raw"] / "Dataset060_IXI"
    assert report.dataset_dir == out and report.converted == ["IXI002-Guys-0828"] and report.labelled == []
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T2", "2": "PD"} and meta["numTraining"] == 1
    assert not (out / "labelsTr").exists()
    produced = {name: nib.load(str(out / "imagesTr" / f"IXI002-Guys-0828_{i:04d}.nii.gz"))
                for i, name in enumerate(("T1", "T2", "PD"))}
    for image in produced.values():
        assert image.shape == (N, N, N)
        np.testing.assert_allclose(image.affine, T2_AFFINE, atol=1e-5)
    assert (out / "imagesTr" / "IXI002-Guys-0828_0001.nii.gz").read_bytes() == \
        (tmp_path / "src" / "IXI002-Guys-0828-T2.nii.gz").read_bytes()
    t1 = np.asarray(produced["T1"].dataobj)
    unregistered_t1 = rigidly_moved(truth["T1"])
    assert corr(t1, truth["T1"]) > 0.9 and corr(t1, truth["T1"]) > corr(unregistered_t1, truth["T1"]) + 0.2
    # PD: compare with what the headers alone would give (the 2.5 mm offset left in place).
    pd_file = tmp_path / "src" / "IXI002-Guys-0828-PD.nii"
    pd_source = nib.load(str(pd_file))
    header_only = sitk.Resample(_to_sitk(Volume(np.asarray(pd_source.dataobj, np.float32), pd_source.affine,
                                                pd_source.header)),
                                _to_sitk(Volume(truth["T2"], T2_AFFINE, nib.Nifti1Header())), sitk.Transform())
    header_only_pd = sitk.GetArrayFromImage(header_only).transpose(2, 1, 0)
    pd = np.asarray(produced["PD"].dataobj)
    assert corr(pd, truth["PD"]) > 0.98 and corr(pd, truth["PD"]) > corr(header_only_pd, truth["PD"])


def test_layouts_per_modality_and_per_subject_folders(project_dirs, tmp_path):
    source = tmp_path / "src"
    make_subject(source / "IXI012-HH-1211", "IXI012-HH-1211")  # one folder per subject
    staging = tmp_path / "flat"
    make_subject(staging, "IXI013-HH-1212", seed=1)
    for path in staging.iterdir():  # one folder per modality, as the IXI tarballs unpack
        modality = path.name.split("-")[-1].split(".")[0]
        (source / f"IXI-{modality}").mkdir(parents=True, exist_ok=True)
        path.rename(source / f"IXI-{modality}" / path.name)
    write(source / "IXI-MRA" / "IXI013-HH-1212-MRA.nii.gz", np.ones((4, 4, 4), np.int16))
    cases, warnings = discover_ixi_cases(source)
    assert [c.case_id for c in cases] == ["IXI012-HH-1211", "IXI013-HH-1212"]
    assert all(list(c.images) == ["T1", "T2", "PD"] and not c.problems for c in cases)
    assert warnings == ["ignored 1 image file(s) that are not T1/T2/PD (e.g. IXI013-HH-1212-MRA.nii.gz)"]


def _missing_pd(folder: Path) -> None:
    (folder / "IXI100-Bad-0001-PD.nii").unlink()


def _nan_t1(folder: Path) -> None:
    data = blobs(3)
    data[0, 0, 0] = np.nan
    write(folder / "IXI100-Bad-0001-T1.nii.gz", data)


def _zero_t2(folder: Path) -> None:
    write(folder / "IXI100-Bad-0001-T2.nii.gz", np.zeros((N, N, N), np.float32))


def _garbage_t1(folder: Path) -> None:
    (folder / "IXI100-Bad-0001-T1.nii.gz").write_bytes(b"not a nifti")


def _duplicate_t1(folder: Path) -> None:
    write(folder / "IXI100-Bad-0001-T1.nii", blobs(4))


def _four_d_t2(folder: Path) -> None:
    write(folder / "IXI100-Bad-0001-T2.nii.gz", np.ones((N, N, N, 2), np.float32))


@pytest.mark.parametrize("damage, expected", [
    (_missing_pd, "missing PD"),
    (_nan_t1, "T1 has 1 NaN and 0 inf voxel(s)"),
    (_zero_t2, "T2 is all zero"),
    (_garbage_t1, "unreadable NIfTI"),
    (_duplicate_t1, "two T1 files"),
    (_four_d_t2, "expected a 3D image"),
])
def test_bad_subject_stops_before_writing(damage, expected, project_dirs, tmp_path, capsys):
    make_subject(tmp_path / "src", "IXI099-Good-0001")
    make_subject(tmp_path / "src", "IXI100-Bad-0001", seed=2)
    damage(tmp_path / "src")
    assert main([str(tmp_path / "src"), "-d", "61"]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 case(s) failed" in err and "IXI100-Bad-0001:" in err and expected in err
    assert "IXI099-Good-0001" not in err and "Traceback" not in err
    assert list(project_dirs["raw"].iterdir()) == []


def test_skip_bad_converts_the_good_subjects(project_dirs, tmp_path, capsys):
    make_subject(tmp_path / "src", "IXI099-Good-0001")
    make_subject(tmp_path / "src", "IXI100-Bad-0001", seed=2)
    _missing_pd(tmp_path / "src")
    assert main([str(tmp_path / "src"), "-d", "62", "--name", "IXIsub", "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "Converted 1 case(s)" in out and "IXI100-Bad-0001: missing PD" in out
    images = sorted(p.name for p in (project_dirs["raw"] / "Dataset062_IXIsub" / "imagesTr").iterdir())
    assert images == [f"IXI099-Good-0001_{i:04d}.nii.gz" for i in range(3)]


@pytest.mark.parametrize("content, expected", [(None, "is empty"), ("readme.txt", "no IXI files named"),
                                               ("absent", "does not exist")])
def test_unusable_source_folder(content, expected, project_dirs, tmp_path, capsys):
    source = tmp_path / "src"
    if content != "absent":
        source.mkdir()
    if content == "readme.txt":
        (source / content).write_text("IXI")
    assert main([str(source), "-d", "63"]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(source) in err
    assert list(project_dirs["raw"].iterdir()) == []


def test_check_error_lists_every_bad_subject(project_dirs, tmp_path):
    make_subject(tmp_path / "src", "IXI100-Bad-0001", seed=2)
    _missing_pd(tmp_path / "src")
    write(tmp_path / "src" / "IXI101-Bad-0002-T1.nii.gz", blobs(5))
    with pytest.raises(CaseProblemsError) as raised:
        convert_ixi(tmp_path / "src", 64)
    assert raised.value.problems == {"IXI100-Bad-0001": ["missing PD"], "IXI101-Bad-0002": ["missing T2", "missing PD"]}
