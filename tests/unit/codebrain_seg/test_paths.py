"""Folder variables and ``-d`` resolution."""
from __future__ import annotations

from pathlib import Path

import pytest

from codebrain_seg import paths


def _make(root: Path, *names: str) -> None:
    for name in names:
        (root / name).mkdir(parents=True)


def test_own_variable_wins_over_nnunet(monkeypatch, tmp_path):
    monkeypatch.setenv("codebrain_raw", str(tmp_path / "own"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnunet"))
    assert paths.raw_root() == tmp_path / "own"


def test_falls_back_to_nnunet_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("codebrain_results", raising=False)
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "nnunet"))
    assert paths.results_root() == tmp_path / "nnunet"


def test_error_names_both_variables_when_unset(monkeypatch):
    for variable in ("codebrain_preprocessed", "nnUNet_preprocessed"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(EnvironmentError) as error:
        paths.preprocessed_root()
    assert "codebrain_preprocessed" in str(error.value) and "nnUNet_preprocessed" in str(error.value)


@pytest.mark.parametrize("argument", ["137", 137, "Dataset137_BraTS2023", "BraTS2023"])
def test_resolve_by_id_full_or_short_name(project_dirs, argument):
    _make(project_dirs["raw"], "Dataset137_BraTS2023", "Dataset004_IXI")
    assert paths.resolve_dataset(argument) == "Dataset137_BraTS2023"


def test_resolve_finds_dataset_only_in_preprocessed(project_dirs):
    _make(project_dirs["preprocessed"], "Dataset010_Demo")
    assert paths.resolve_dataset("Demo") == "Dataset010_Demo"


def test_unknown_dataset_lists_known_ones(project_dirs):
    _make(project_dirs["raw"], "Dataset004_IXI")
    with pytest.raises(paths.DatasetNotFoundError) as error:
        paths.resolve_dataset("BraTS2023")
    assert "BraTS2023" in str(error.value) and "Dataset004_IXI" in str(error.value)


def test_ambiguous_id_is_an_error(project_dirs):
    _make(project_dirs["raw"], "Dataset005_A", "Dataset005_B")
    with pytest.raises(paths.DatasetNotFoundError, match="ambiguous"):
        paths.resolve_dataset(5)


def test_dataset_folder_name_validates():
    assert paths.dataset_folder_name(7, "Demo") == "Dataset007_Demo"
    with pytest.raises(ValueError):
        paths.dataset_folder_name(1000, "Demo")
    with pytest.raises(ValueError):
        paths.dataset_folder_name(7, "bad_name")
