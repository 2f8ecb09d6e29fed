"""BraTS converter on real 2018 cases: byte-identical images, ET 4 -> 3, and the 2023 naming giving the same output."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from codebrain_seg.converters.brats import convert_brats, detect_naming
from codebrain_seg.raw_dataset import BRATS_REGIONS

REAL_CASES = ("Brats18_2013_11_1", "Brats18_CBICA_ABM_1", "TCGA-DU-7294")  # the last has no ET at all


OLD = ("t1", "t1ce", "t2", "flair")


NEW = ("t1n", "t1c", "t2w", "t2f")  # same order: T1, T1Gd, T2, FLAIR


def _real_subset(real_data_dir: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for case in REAL_CASES:
        (folder / case).symlink_to(real_data_dir / case, target_is_directory=True)
    return folder


def test_real_2018_cases(real_data_dir, project_dirs, tmp_path):
    source = _real_subset(real_data_dir, tmp_path / "MICCAI_BraTS_2018_subset")
    report = convert_brats(source, 31)
    out = project_dirs["raw"] / "Dataset031_BraTS2018"  # the year comes from the source folder's name
    assert report.dataset_dir == out and sorted(report.converted) == sorted(REAL_CASES)
    assert sorted(report.labelled) == sorted(REAL_CASES) and report.skipped == {}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"}
    assert meta["labels"] == BRATS_REGIONS and meta["regions_class_order"] == [2, 1, 3]
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    for case in REAL_CASES:
        for channel, sequence in enumerate(OLD):
            produced = out / "imagesTr" / f"{case}_{channel:04d}.nii.gz"
            assert produced.read_bytes() == (real_data_dir / case / f"{case}_{sequence}.nii.gz").read_bytes()
        source_seg = nib.load(str(real_data_dir / case / f"{case}_seg.nii.gz"))
        label = nib.load(str(out / "labelsTr" / f"{case}.nii.gz"))
        values = np.asarray(label.dataobj)
        source_values = np.asarray(source_seg.dataobj)
        assert label.get_data_dtype() == np.uint8 and values.shape == source_values.shape
        assert set(np.unique(values)) <= {0, 1, 2, 3}
        assert (values == 3).sum() == (source_values == 4).sum()
        assert np.array_equal(values, np.where(source_values == 4, 3, source_values))
        t1 = nib.load(str(real_data_dir / case / f"{case}_t1.nii.gz"))
        np.testing.assert_allclose(label.affine, t1.affine, atol=1e-6)
    assert not (project_dirs["raw"] / ".Dataset031_BraTS2018.partial").exists()
    # nnU-Net's own check (readable by its reader, geometry of labels = images, label values declared).
    from nnunetv2.experiment_planning.verify_dataset_integrity import (
        verify_dataset_integrity,
    )
    verify_dataset_integrity(str(out), num_processes=1)


def test_real_cases_in_2023_naming_give_identical_output(real_data_dir, project_dirs, tmp_path):
    old_source = _real_subset(real_data_dir, tmp_path / "old")
    renamed = tmp_path / "renamed"
    for case in REAL_CASES:
        (renamed / case).mkdir(parents=True)
        for old, new in zip(OLD, NEW):
            (renamed / case / f"{case}-{new}.nii.gz").symlink_to(real_data_dir / case / f"{case}_{old}.nii.gz")
        seg = nib.load(str(real_data_dir / case / f"{case}_seg.nii.gz"))
        relabelled = np.asarray(seg.dataobj).copy()
        relabelled[relabelled == 4] = 3
        nib.save(nib.Nifti1Image(relabelled, seg.affine, seg.header), str(renamed / case / f"{case}-seg.nii.gz"))
    assert detect_naming(renamed).key == "2023" and detect_naming(old_source).key == "2018"
    old_out = convert_brats(old_source, 32, name="Old").dataset_dir
    new_report = convert_brats(renamed, 33)
    assert new_report.dataset_dir.name == "Dataset033_BraTS2023"  # fallback name of the 2023 naming
    old_files = sorted(p.relative_to(old_out) for p in old_out.rglob("*.nii.gz"))
    assert old_files == sorted(p.relative_to(new_report.dataset_dir) for p in new_report.dataset_dir.rglob("*.nii.gz"))
    assert len(old_files) == 3 * 5
    for relative in old_files:
        a, b = nib.load(str(old_out / relative)), nib.load(str(new_report.dataset_dir / relative))
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), relative
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
