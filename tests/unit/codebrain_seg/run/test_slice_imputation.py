"""codebrain_impute on a missing-slice (cardiac) dataset (codebrain_seg/run/slice_imputation.py), with the baselines.

Asserts: ``--missing-slices`` parsing (a comma-separated list of 0-based indices) and its refusals (not a list,
negative, twice, out of range for a case: one line naming the case, exit code 2, nothing written); the all-zero
slices of a case are found and filled, the given slices are bit for bit the input's (int16 and float32 inputs,
the input's data type and affine kept), the sidecar names the filled slices, why, the method and the geometry;
no temporary file is left and a rerun keeps the finished cases; a sequence method and the input folder as output
are refused.
"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from codebrain_seg.cardiac_phantom import cardiac_phantom, make_cardiac_dataset
from codebrain_seg.cli.impute import main as impute_main
from codebrain_seg.errors import InputError
from codebrain_seg.inference.slice_baselines import interpolate_missing_slices
from codebrain_seg.run.imputation import impute_folder
from codebrain_seg.run.slice_imputation import parse_missing_slices
from planners.plan_and_preprocess import plan_and_preprocess


@pytest.fixture
def cardiac_inputs(project_dirs, tmp_path):
    make_cardiac_dataset(41, num_subjects=2, shape=(32, 32, 8))
    plan_and_preprocess(41)
    folder = tmp_path / "in"
    folder.mkdir()
    image, _, affine = cardiac_phantom((32, 32, 8), "ED", seed=5)
    stack = np.rint(image).astype(np.int16)
    stack[..., 3] = 0
    nib.save(nib.Nifti1Image(stack, affine), str(folder / "caseA_0000.nii.gz"))
    other, _, affine = cardiac_phantom((32, 32, 8), "ES", seed=6)
    other[..., 5:7] = 0.0
    nib.save(nib.Nifti1Image(other.astype(np.float32), affine), str(folder / "caseB_0000.nii.gz"))
    return folder


def test_parse_missing_slices():
    assert parse_missing_slices("3,4,5") == (3, 4, 5)
    assert parse_missing_slices(" 5, 3 ") == (3, 5)
    assert parse_missing_slices(None) is None and parse_missing_slices([2, 1]) == (1, 2)
    for bad in ("3-5", "a,b", "", "3,,4", "-1", "3;4", "1.5"):
        with pytest.raises(InputError, match="not a list of slice indices"):
            parse_missing_slices(bad)
    with pytest.raises(InputError, match="twice"):
        parse_missing_slices("3,3")
    with pytest.raises(InputError, match="non-negative"):
        parse_missing_slices([-1])


def test_all_zero_slices_filled_given_untouched(cardiac_inputs, tmp_path):
    out = tmp_path / "out"
    written = impute_folder(41, 0, cardiac_inputs, out, method="linear")
    assert sorted(p.name for p in written) == ["caseA_0000.nii.gz", "caseA_imputation.json", "caseB_0000.nii.gz",
                                               "caseB_imputation.json"]
    for case, filled_slices, dtype in (("caseA", [3], np.int16), ("caseB", [5, 6], np.float32)):
        source = nib.load(str(cardiac_inputs / f"{case}_0000.nii.gz"))
        result = nib.load(str(out / f"{case}_0000.nii.gz"))
        before, after = np.asarray(source.dataobj), np.asarray(result.dataobj)
        assert after.dtype == dtype and np.array_equal(result.affine, source.affine)
        given = [k for k in range(8) if k not in filled_slices]
        assert np.array_equal(after[..., given], before[..., given])  # bit for bit
        flags = np.isin(np.arange(8), filled_slices)
        expected = interpolate_missing_slices(before.astype(np.float32), flags, 2)[..., filled_slices]
        np.testing.assert_allclose(after[..., filled_slices], expected, atol=0.5 if dtype == np.int16 else 1e-4)
        sidecar = json.loads((out / f"{case}_imputation.json").read_text())
        assert sidecar["filled_slices"] == filled_slices and sidecar["given_slices"] == given
        assert sidecar["missing_because"] == "all-zero slice" and sidecar["method"] == "linear"
        assert sidecar["slice_axis"] == 2 and sidecar["num_slices"] == 8
        assert sidecar["geometry"]["dtype"] == np.dtype(dtype).name and sidecar["output"] == f"{case}_0000.nii.gz"
    assert not list(out.glob(".*"))  # no temporary file left
    stamp = (out / "caseA_0000.nii.gz").stat().st_mtime_ns
    assert impute_folder(41, 0, cardiac_inputs, out, method="linear") == []  # a rerun keeps finished cases
    assert (out / "caseA_0000.nii.gz").stat().st_mtime_ns == stamp


def test_listed_slices_and_refusals(cardiac_inputs, tmp_path, capsys):
    out = tmp_path / "listed"
    impute_folder(41, 0, cardiac_inputs, out, method="nearest", missing_slices="1,2")
    sidecar = json.loads((out / "caseB_imputation.json").read_text())
    assert sidecar["filled_slices"] == [1, 2] and sidecar["missing_because"] == "--missing-slices"
    result = np.asarray(nib.load(str(out / "caseB_0000.nii.gz")).dataobj)
    source = np.asarray(nib.load(str(cardiac_inputs / "caseB_0000.nii.gz")).dataobj)
    assert np.array_equal(result[..., 1], source[..., 0]) and np.array_equal(result[..., 2], source[..., 3])
    assert np.array_equal(result[..., 5:7], source[..., 5:7])  # all-zero but not listed: given, untouched

    refused = tmp_path / "refused"
    with pytest.raises(InputError, match=r"case caseA: --missing-slices 8 out of range: the stack has 8 slices"):
        impute_folder(41, 0, cardiac_inputs, refused, method="linear", missing_slices="2,8")
    with pytest.raises(InputError, match="every one of its 8 slices is missing"):
        impute_folder(41, 0, cardiac_inputs, refused, method="linear", missing_slices="0,1,2,3,4,5,6,7")
    with pytest.raises(InputError, match="fills missing sequences, not missing slices"):
        impute_folder(41, 0, cardiac_inputs, refused, method="mean")
    with pytest.raises(InputError, match="is the input folder"):
        impute_folder(41, 0, cardiac_inputs, cardiac_inputs, method="linear")
    assert not refused.exists()
    code = impute_main(["-d", "41", "-i", str(cardiac_inputs), "-o", str(refused), "--method", "zero",
                        "--missing-slices", "3-5"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "not a list of slice indices" in error[0]
    code = impute_main(["-d", "41", "-i", str(cardiac_inputs), "-o", str(refused), "--missing-slices", "12"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "case caseA" in error[0] and "out of range" in error[0]
    assert not refused.exists()
