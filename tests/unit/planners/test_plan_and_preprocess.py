"""Fingerprint, planner decisions, preprocessing and the inverse mapping, on small synthetic raw datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from codebrain_seg.cli.plan_and_preprocess import main as plan_main
from codebrain_seg.io import read_json, read_nifti, volume_from_array
from codebrain_seg.raw_dataset import (
    BRATS_CHANNELS,
    BRATS_REGIONS,
    BRATS_REGIONS_CLASS_ORDER,
    RawDatasetWriter,
    image_path,
    make_dataset_json,
)
from planners.plan_and_preprocess import plan_and_preprocess
from planners.preprocessing import restore_to_original


def _write_synthetic(raw_root: Path, name: str, affine: np.ndarray, shape=(40, 36, 24), cases: int = 4,
                     seed: int = 0) -> Path:
    """Ellipsoid 'brains' of varying size/position with 4 channels of different contrast and a label."""
    rng = np.random.default_rng(seed)
    writer = RawDatasetWriter(raw_root / name)
    grid = np.indices(shape).astype(np.float32)
    for index in range(cases):
        centre = np.array(shape) / 2 + rng.uniform(-3, 3, size=3)
        radii = np.array(shape) * rng.uniform(0.25, 0.4, size=3)
        inside = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
        images = []
        for channel in range(4):
            data = np.where(inside, rng.uniform(50, 1000, size=shape), 0).astype(np.float32)
            images.append(volume_from_array(data, affine))
        label = np.zeros(shape, np.uint8)
        label[inside & (grid[0] < centre[0])] = 2
        writer.write_case(f"case{index:02d}", images, label)
    writer.finish(make_dataset_json(BRATS_CHANNELS, cases, BRATS_REGIONS, BRATS_REGIONS_CLASS_ORDER, name=name))
    return raw_root / name


LPS = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 1.0, -5], [0, 0, 0, 1]])
# Voxel axes permuted and flipped against RAS, and anisotropic: axis 0 is the 3 mm axis (superior-inferior).
ODD = np.array([[0, 1.0, 0, 0], [0, 0, -1.0, 30], [3.0, 0, 0, 0], [0, 0, 0, 1]])


def test_preprocessing_round_trip_and_ranges(project_dirs):
    raw_dir = _write_synthetic(project_dirs["raw"], "Dataset201_Synth", LPS)
    out = plan_and_preprocess(201, num_processes=1)
    plans = read_json(out / "codebrainPlans.json")
    for name in ("2d", "2d_cpu"):
        config = plans["configurations"][name]
        assert config["fsq_levels"] == [8, 8, 8, 5, 5, 5]
        assert all(c % 8 == 0 for c in config["crop_size"])
        assert config["code_grid"] == [c // 8 for c in config["crop_size"]]
    folder = out / plans["configurations"]["2d"]["data_identifier"]
    for case in ("case00", "case03"):
        array = np.load(folder / f"{case}.npy")
        properties = read_json(folder / f"{case}.json")
        assert array.dtype == np.float32 and array.min() >= 0 and array.max() <= 1
        assert array.shape == (4, properties["slice_range"][1] - properties["slice_range"][0],
                               *plans["configurations"]["2d"]["crop_size"])
        restored = restore_to_original(array, properties)
        for channel in range(4):
            original = read_nifti(image_path(raw_dir, case, channel)).data
            brain = original != 0
            unclipped = brain & (original <= properties["normalization_upper"][channel])
            assert restored[channel].shape == original.shape
            np.testing.assert_allclose(restored[channel][unclipped], original[unclipped], rtol=1e-5)
            assert (restored[channel][~brain] == 0).all()
            # Voxels above the robust upper percentile are clipped, by design, to that percentile.
            clipped = brain & ~unclipped
            np.testing.assert_allclose(restored[channel][clipped], properties["normalization_upper"][channel],
                                       rtol=1e-5)
        seg = np.load(folder / f"{case}_seg.npy")
        assert seg.shape == array.shape[1:] and set(np.unique(seg)) <= {0, 2}
    splits = read_json(out / "splits_final.json")
    assert len(splits) == 4 and all(set(s["train"]).isdisjoint(s["val"]) for s in splits)


def test_permuted_anisotropic_geometry_slices_the_thick_axis_and_round_trips(project_dirs):
    raw_dir = _write_synthetic(project_dirs["raw"], "Dataset202_Odd", ODD, shape=(20, 36, 30))
    out = plan_and_preprocess("Odd")
    plans = read_json(out / "codebrainPlans.json")
    config = plans["configurations"]["2d"]
    assert config["slicing_axis"] == 2  # RAS S axis = file axis 0, the 3 mm one
    assert "anisotropic" in plans["reasons"]["slicing_axis"]
    properties = read_json(out / config["data_identifier"] / "case01.json")
    array = np.load(out / config["data_identifier"] / "case01.npy")
    restored = restore_to_original(array, properties, denormalise=False)
    original = read_nifti(image_path(raw_dir, "case01", 2)).data
    assert restored.shape[1:] == original.shape
    # Same voxels are brain after the permutation round trip.
    assert ((restored[2] > 0) == (original > 0)).mean() > 0.999


def test_rerun_skips_finished_cases_and_redoes_unfinished(project_dirs):
    _write_synthetic(project_dirs["raw"], "Dataset203_Resume", LPS, cases=3)
    out = plan_and_preprocess(203, ["2d"])
    folder = out / "codebrainPlans_2d"
    finished = (folder / "case00.npy").stat().st_mtime_ns
    (folder / "case01.json").unlink()  # as if interrupted before the properties were written
    plan_and_preprocess(203, ["2d"])
    assert (folder / "case00.npy").stat().st_mtime_ns == finished
    assert (folder / "case01.json").is_file()
    assert not list(folder.glob(".*tmp*"))


def test_unknown_dataset_and_configuration_exit_cleanly(project_dirs, capsys):
    assert plan_main(["-d", "999"]) == 2
    assert "999" in capsys.readouterr().err
    _write_synthetic(project_dirs["raw"], "Dataset204_Cfg", LPS, cases=2)
    assert plan_main(["-d", "204", "-c", "3d_fancy"]) == 2
    assert "3d_fancy" in capsys.readouterr().err


def test_verify_dataset_integrity_reports_bad_case_and_writes_nothing(project_dirs, capsys):
    raw_dir = _write_synthetic(project_dirs["raw"], "Dataset205_Bad", LPS, cases=3)
    broken = image_path(raw_dir, "case01", 2)
    data = read_nifti(broken)
    data.data[3, 3, 3] = np.nan
    from codebrain_seg.io import write_nifti

    write_nifti(broken, data.data, data.affine, data.header)
    assert plan_main(["-d", "205", "--verify_dataset_integrity"]) == 2
    err = capsys.readouterr().err
    assert "case01" in err and "NaN" in err
    assert not (project_dirs["preprocessed"] / "Dataset205_Bad").exists()
