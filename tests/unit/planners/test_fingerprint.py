"""planners/fingerprint.py: the brain mask and box, one case's fingerprint and the dataset summaries, on a tiny
synthetic raw dataset written with nibabel."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from codebrain_seg.errors import InputError, MissingFileError
from planners.fingerprint import bounding_box, brain_mask, extract_fingerprint, fingerprint_case

DATASET_JSON = {"channel_names": {"0": "T1", "1": "T2"}}


def test_brain_mask_is_the_union_of_the_non_zero_voxels() -> None:
    a = np.zeros((3, 4, 5))
    b = np.zeros((3, 4, 5))
    a[0, 1, 2] = 5.0
    b[2, 3, 4] = -1.0  # negative intensities count as brain too
    mask = brain_mask([a, b])
    assert mask.dtype == bool and mask.shape == (3, 4, 5)
    assert np.flatnonzero(mask).tolist() == [np.ravel_multi_index((0, 1, 2), a.shape),
                                             np.ravel_multi_index((2, 3, 4), a.shape)]


def test_bounding_box_is_half_open_per_axis() -> None:
    mask = np.zeros((10, 8, 6), bool)
    mask[2:5, 3, 1:6] = True
    mask[7, 4, 2] = True
    assert bounding_box(mask) == [[2, 8], [3, 5], [1, 6]]
    single = np.zeros((4, 4), bool)
    single[3, 0] = True
    assert bounding_box(single) == [[3, 4], [0, 1]]
    with pytest.raises(InputError, match="empty brain mask"):
        bounding_box(np.zeros((3, 3, 3), bool))


def _write_case(raw: Path, case: str, channels: list[np.ndarray], affine: np.ndarray, label: bool) -> None:
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(channels):
        nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(raw / "imagesTr" / f"{case}_{index:04d}.nii.gz"))
    if label:
        (raw / "labelsTr").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.zeros(channels[0].shape, np.uint8), affine),
                 str(raw / "labelsTr" / f"{case}.nii.gz"))


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Two cases of two channels: A (RAS, 2 mm on the first axis) and B (stored LAS: x flipped), with
    known brains."""
    folder = tmp_path / "Dataset900_Tiny"
    t1 = np.zeros((6, 5, 4))
    t1[1:4, 1:3, 0:2] = np.arange(1, 13).reshape(3, 2, 2)  # 12 brain voxels, values 1..12
    t2 = np.zeros((6, 5, 4))
    t2[1:4, 1:3, 0:2] = 10.0
    t2[5, 4, 3] = 10.0  # T2 alone reaches one more voxel: the brain is the union
    _write_case(folder, "A", [t1, t2], np.diag([2.0, 1.0, 1.0, 1.0]), label=True)
    b1 = np.zeros((8, 6, 4))
    b1[0:2, 0:6, 1:3] = 3.0  # 24 voxels at the low end of the stored x axis
    _write_case(folder, "B", [b1, b1 * 2], np.diag([-1.0, 1.0, 1.0, 1.0]), label=False)
    return folder


def test_fingerprint_of_one_case(raw: Path) -> None:
    case = fingerprint_case(raw, "A", 2)
    assert case["case_id"] == "A" and case["shape"] == [6, 5, 4]
    assert case["spacing"] == [2.0, 1.0, 1.0] and case["orientation"] == "RAS"
    assert case["brain_bbox"] == [[1, 6], [1, 5], [0, 4]] and case["brain_voxels"] == 13
    assert case["has_label"] is True
    t1, t2 = case["intensities"]
    inside = np.concatenate([np.arange(1, 13), [0.0]])  # T1 inside the union mask
    assert t1["min"] == 0.0 and t1["max"] == 12.0
    assert t1["mean"] == pytest.approx(inside.mean()) and t1["std"] == pytest.approx(inside.std())
    assert t1["percentiles"]["50.0"] == pytest.approx(np.percentile(inside, 50))
    assert t1["percentiles"]["99.5"] == pytest.approx(np.percentile(inside, 99.5))
    assert t2["mean"] == 10.0 and t2["std"] == 0.0 and t2["percentiles"]["0.5"] == 10.0


def test_fingerprint_measures_in_canonical_voxel_order(raw: Path) -> None:
    case = fingerprint_case(raw, "B", 2)
    # stored x is flipped (LAS): the brain at stored x 0..1 lies at canonical x 6..7
    assert case["orientation"] == "LAS" and case["shape"] == [8, 6, 4]
    assert case["brain_bbox"] == [[6, 8], [0, 6], [1, 3]] and case["brain_voxels"] == 24
    assert case["has_label"] is False
    assert case["intensities"][1]["mean"] == 6.0


def test_all_zero_case_is_an_input_error_naming_the_case(tmp_path: Path) -> None:
    _write_case(tmp_path, "Z", [np.zeros((3, 3, 3))], np.eye(4), label=False)
    with pytest.raises(InputError, match="case Z: every sequence is zero everywhere"):
        fingerprint_case(tmp_path, "Z", 1)


def test_dataset_fingerprint_summaries(raw: Path) -> None:
    fingerprint = extract_fingerprint(raw, DATASET_JSON)
    assert fingerprint["channel_names"] == ["T1", "T2"] and fingerprint["num_cases"] == 2
    assert [c["case_id"] for c in fingerprint["cases"]] == ["A", "B"]
    assert fingerprint["median_shape"] == [7.0, 5.5, 4.0]
    assert fingerprint["median_spacing"] == [1.5, 1.0, 1.0]
    assert fingerprint["orientations"] == ["LAS", "RAS"]
    # brain extents: A (5, 4, 4), B (2, 6, 2)
    assert fingerprint["max_brain_extent"] == [5, 6, 4]
    assert fingerprint["median_brain_extent"] == [3.5, 5.0, 3.0]
    uppers = [c["intensities"][0]["percentiles"]["99.5"] for c in fingerprint["cases"]]
    assert fingerprint["intensity_summary"]["T1"]["median_p99_5"] == pytest.approx(np.median(uppers))
    assert fingerprint["intensity_summary"]["T2"]["median_p50"] == pytest.approx(8.0)  # median of 10 and 6


def test_dataset_without_cases_is_a_missing_file_error(tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(MissingFileError, match="holds no cases"):
        extract_fingerprint(tmp_path, DATASET_JSON)
