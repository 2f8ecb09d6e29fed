"""The built-in BraTS-like phantom: determinism, realistic contrasts, labels, and the dataset CLI."""
from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from codebrain_seg.cli.make_demo_dataset import main
from codebrain_seg.demo_data import (
    DEFAULT_SHAPE,
    GM,
    VENTRICLE,
    WM,
    DemoCase,
    make_demo_case,
    make_demo_dataset,
)
from codebrain_seg.raw_dataset import (
    BRATS_CHANNELS,
    BRATS_REGIONS,
    BRATS_REGIONS_CLASS_ORDER,
    RawDatasetWriter,
    list_cases,
    load_dataset_json,
)

SEEDS = (0, 1, 2)
SMALL_SHAPE = (40, 40, 24)  # for the file-writing tests, which check structure rather than anatomy


@pytest.fixture(scope="module")
def cases() -> list[DemoCase]:
    """A few subjects at the default grid, shared by the content tests."""
    return [make_demo_case(DEFAULT_SHAPE, seed) for seed in SEEDS]


def _relative(case: DemoCase, channel: str, region: np.ndarray) -> float:
    """Mean intensity of a region relative to white matter on one sequence."""
    image = case.images[channel]
    return float(image[region].mean() / image[case.tissue == WM].mean())


def test_same_seed_same_case_other_seed_other_case() -> None:
    first, again, other = (make_demo_case(SMALL_SHAPE, seed) for seed in (5, 5, 6))
    for channel in BRATS_CHANNELS:
        np.testing.assert_array_equal(first.images[channel], again.images[channel])
        assert not np.array_equal(first.images[channel], other.images[channel])
    np.testing.assert_array_equal(first.label, again.label)
    assert not np.array_equal(first.label, other.label)


def test_arrays_geometry_and_background(cases: list[DemoCase]) -> None:
    for case in cases:
        assert sorted(case.images) == sorted(BRATS_CHANNELS)
        assert case.label.dtype == np.uint8 and case.label.shape == DEFAULT_SHAPE
        np.testing.assert_allclose(case.spacing, (3.0, 3.0, 4.0))
        for image in case.images.values():
            assert image.dtype == np.float32 and image.shape == DEFAULT_SHAPE
            # Skull-stripped: zero outside the brain, positive integers up to about 1000 inside.
            assert np.all(image[~case.brain_mask] == 0) and image[case.brain_mask].min() >= 1
            assert 300 <= image.max() <= 1500 and np.all(image == np.rint(image))


def test_sequences_differ_pairwise(cases: list[DemoCase]) -> None:
    for case in cases:
        brain = case.brain_mask
        for i, first in enumerate(BRATS_CHANNELS):
            for second in BRATS_CHANNELS[i + 1:]:
                correlation = np.corrcoef(case.images[first][brain], case.images[second][brain])[0, 1]
                assert correlation < 0.99, (first, second, correlation)


def test_contrasts_as_in_real_scans(cases: list[DemoCase]) -> None:
    for case in cases:
        oedema, enhancing = case.label == 2, case.label == 3
        ventricles, grey = case.tissue == VENTRICLE, case.tissue == GM
        assert _relative(case, "FLAIR", oedema) > 1.3
        assert _relative(case, "T2", oedema) > 1.3
        # Gadolinium brightens the enhancing rim on T1Gd only.
        assert _relative(case, "T1Gd", enhancing) > 1.3 * _relative(case, "T1", enhancing)
        assert _relative(case, "FLAIR", ventricles) < 0.8  # CSF nulled by the inversion
        assert _relative(case, "T2", ventricles) > 1.5
        assert _relative(case, "T1", grey) < 0.95


def test_labels_valid_and_rim_encloses_core(cases: list[DemoCase]) -> None:
    for case in cases:
        assert set(np.unique(case.label)) == {0, 1, 2, 3}
        assert np.all(case.brain_mask[case.label > 0])
        core = case.label == 1
        shell = ndimage.binary_dilation(core) & ~core
        assert np.mean(case.label[shell] == 3) > 0.75


def test_bad_shape_and_seed_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        make_demo_case((8, 64, 40))
    with pytest.raises(ValueError, match="seed"):
        make_demo_case(SMALL_SHAPE, -1)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_writes_raw_dataset(project_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["-d", "901", "--cases", "2", "--shape", *map(str, SMALL_SHAPE), "--seed", "3"])
    dataset = project_dirs["raw"] / "Dataset901_DemoBraTS"
    assert code == 0 and str(dataset) in capsys.readouterr().out
    content = load_dataset_json(dataset)
    assert content["channel_names"] == {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"}
    assert content["labels"] == BRATS_REGIONS and content["regions_class_order"] == BRATS_REGIONS_CLASS_ORDER
    assert content["numTraining"] == 2
    expected_case = make_demo_case(SMALL_SHAPE, 3)
    for case_id in ("DemoBraTS_000", "DemoBraTS_001"):
        label = nib.load(dataset / "labelsTr" / f"{case_id}.nii.gz")
        assert label.shape == SMALL_SHAPE
        for channel in range(4):
            image = nib.load(dataset / "imagesTr" / f"{case_id}_{channel:04d}.nii.gz")
            assert image.shape == SMALL_SHAPE
            np.testing.assert_allclose(image.affine, label.affine)
            np.testing.assert_allclose(image.header.get_zooms()[:3], np.abs(np.diag(label.affine)[:3]))
    # The files hold exactly what make_demo_case returns for seed + index.
    np.testing.assert_allclose(label.affine, expected_case.affine)
    first_t2 = nib.load(dataset / "imagesTr" / "DemoBraTS_000_0002.nii.gz").get_fdata()
    np.testing.assert_array_equal(first_t2, expected_case.images["T2"])
    first_label = np.asarray(nib.load(dataset / "labelsTr" / "DemoBraTS_000.nii.gz").dataobj)
    np.testing.assert_array_equal(first_label, expected_case.label)
    assert not any(p.name.startswith(".") for p in project_dirs["raw"].iterdir())


def test_cli_refuses_existing_dataset(project_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    dataset = make_demo_dataset(902, num_cases=1, shape=SMALL_SHAPE)
    before = _tree_digest(dataset)
    capsys.readouterr()
    assert main(["-d", "902", "--cases", "1", "--shape", *map(str, SMALL_SHAPE), "--seed", "7"]) == 2
    error = capsys.readouterr().err
    assert "already exists" in error and "--overwrite" in error and "Traceback" not in error
    # Another name with the same id would make `-d 902` ambiguous.
    assert main(["-d", "902", "--name", "Other", "--shape", *map(str, SMALL_SHAPE)]) == 2
    assert "already used" in capsys.readouterr().err
    assert _tree_digest(dataset) == before
    assert main(["-d", "902", "--cases", "1", "--shape", *map(str, SMALL_SHAPE), "--seed", "7", "--overwrite"]) == 0
    assert _tree_digest(dataset) != before


def test_cli_names_both_variables_when_unset(project_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("codebrain_raw")
    assert main(["-d", "903", "--cases", "1"]) == 2
    error = capsys.readouterr().err
    assert "codebrain_raw" in error and "nnUNet_raw" in error and "Traceback" not in error


def test_rerun_after_interruption_drops_stale_cases(project_dirs: dict[str, Path]) -> None:
    # An interrupted run with more cases leaves a staging folder; the rerun must not inherit its extra cases.
    target = project_dirs["raw"] / "Dataset904_DemoBraTS"
    stale = make_demo_case(SMALL_SHAPE, 0)
    RawDatasetWriter(target).write_case("DemoBraTS_005", stale.volumes(), label=stale.label)
    dataset = make_demo_dataset(904, num_cases=1, shape=SMALL_SHAPE)
    assert list_cases(dataset) == ["DemoBraTS_000"]
    assert [p.name for p in (dataset / "labelsTr").iterdir()] == ["DemoBraTS_000.nii.gz"]
