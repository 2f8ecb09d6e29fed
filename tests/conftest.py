"""Shared fixtures: project folders in a temp dir, and the real BraTS cases when they are present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI and developers keep the shared data beside the clone; a user's machine may not have it.
REAL_DATA_DIR = Path(os.environ.get("CODEBRAIN_REAL_DATA", REPO_ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture
def real_data_dir() -> Path:
    """Folder of real BraTS 2018 cases (CASE/CASE_{t1,t1ce,t2,flair,seg}.nii.gz); skips when absent."""
    if not REAL_DATA_DIR.is_dir() or not any(REAL_DATA_DIR.iterdir()):
        pytest.skip(f"real data folder {REAL_DATA_DIR} is absent")
    return REAL_DATA_DIR


@pytest.fixture
def project_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Fresh raw / preprocessed / results folders, exported as the codebrain_* variables."""
    dirs = {kind: tmp_path / kind for kind in ("raw", "preprocessed", "results")}
    for kind, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(f"codebrain_{kind}", str(path))
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(variable, raising=False)
    return dirs
