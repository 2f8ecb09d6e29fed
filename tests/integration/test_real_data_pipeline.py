"""Real BraTS 2018 cases (and the same cases in BraTS 2023 naming): convert -> plan -> preprocess -> map back."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from codebrain_seg.converters.brats import convert_brats
from codebrain_seg.io import read_json, read_nifti
from codebrain_seg.raw_dataset import image_path, list_cases
from planners.plan_and_preprocess import plan_and_preprocess
from planners.preprocessing import restore_to_original

NAMES_2018 = ("t1", "t1ce", "t2", "flair")
NAMES_2023 = ("t1n", "t1c", "t2w", "t2f")


def _check_preprocessed(out: Path, raw_dir: Path, cases_to_round_trip: list[str]) -> dict:
    plans = read_json(out / "codebrainPlans.json")
    assert plans["channel_names"] == ["T1", "T1Gd", "T2", "FLAIR"]
    config = plans["configurations"]["2d"]
    assert config["fsq_levels"] == [8, 8, 8, 5, 5, 5]
    assert config["slicing_axis"] == 2 and config["evaluation_slices"] == 80
    fingerprint = read_json(out / "dataset_fingerprint.json")
    folder = out / config["data_identifier"]
    for case in fingerprint["cases"]:
        # The crop contains every case's brain: no brain voxel is lost.
        array = np.load(folder / f"{case['case_id']}.npy", mmap_mode="r")
        assert array.min() >= 0.0 and array.max() <= 1.0
        brain_in_crop = int((np.asarray(array) > 0).any(axis=0).sum())
        assert brain_in_crop >= case["brain_voxels"] * 0.999, case["case_id"]
    for case_id in cases_to_round_trip:
        properties = read_json(folder / f"{case_id}.json")
        restored = restore_to_original(np.load(folder / f"{case_id}.npy"), properties)
        for channel in range(4):
            original = read_nifti(image_path(raw_dir, case_id, channel)).data
            brain = original > 0
            unclipped = brain & (original <= properties["normalization_upper"][channel])
            assert unclipped.sum() > 0.99 * brain.sum()
            np.testing.assert_allclose(restored[channel][unclipped], original[unclipped], rtol=1e-5, atol=1e-3)
    return plans


def test_brats2018_layout_convert_plan_preprocess(real_data_dir, project_dirs):
    report = convert_brats(real_data_dir, 501)
    raw_dir = report.dataset_dir
    cases = list_cases(raw_dir)
    assert len(cases) == len([p for p in real_data_dir.iterdir() if p.is_dir()])
    out = plan_and_preprocess(501, ["2d"], num_processes=2)
    _check_preprocessed(out, raw_dir, cases[:2])
    label = np.load(out / "codebrainPlans_2d" / f"{cases[0]}_seg.npy")
    assert set(np.unique(label)) <= {0, 1, 2, 3} and (label == 3).any()


def test_brats2023_layout_gives_the_same_preprocessed_arrays(real_data_dir, project_dirs, tmp_path):
    chosen = sorted(p.name for p in real_data_dir.iterdir() if p.is_dir())[:3]
    source_2023 = tmp_path / "brats2023"
    for case in chosen:
        folder = source_2023 / case
        folder.mkdir(parents=True)
        for old, new in zip(NAMES_2018 + ("seg",), NAMES_2023 + ("seg",)):
            image = nib.load(str(real_data_dir / case / f"{case}_{old}.nii.gz"))
            data = np.asarray(image.dataobj)
            if old == "seg":
                data = np.where(data == 4, 3, data).astype(np.uint8)
            nib.save(nib.Nifti1Image(data, image.affine, image.header), str(folder / f"{case}-{new}.nii.gz"))
    source_2018 = tmp_path / "brats2018"
    source_2018.mkdir()
    for case in chosen:
        (source_2018 / case).symlink_to(real_data_dir / case)

    raw_2023 = convert_brats(source_2023, 502, name="BraTS2023").dataset_dir
    raw_2018 = convert_brats(source_2018, 503, name="BraTS2018").dataset_dir
    out_2023 = plan_and_preprocess(502, ["2d"])
    out_2018 = plan_and_preprocess(503, ["2d"])
    _check_preprocessed(out_2023, raw_2023, chosen[:1])
    for case in chosen:
        np.testing.assert_array_equal(np.load(out_2023 / "codebrainPlans_2d" / f"{case}.npy"),
                                      np.load(out_2018 / "codebrainPlans_2d" / f"{case}.npy"))
        np.testing.assert_array_equal(np.load(out_2023 / "codebrainPlans_2d" / f"{case}_seg.npy"),
                                      np.load(out_2018 / "codebrainPlans_2d" / f"{case}_seg.npy"))
