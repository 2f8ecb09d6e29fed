"""The README's first command: ``codebrain_demo`` end to end on phantom data, then a rerun that resumes.

Runs the installed console script in a child process (as a user would), so its environment variables and
threads stay its own. About five minutes on a 2-core CPU.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codebrain_seg.io import read_json
from evaluation.imputation.aggregate import all_patterns


def _demo_command() -> list[str]:
    script = Path(sys.executable).with_name("codebrain_demo")
    found = str(script) if script.is_file() else shutil.which("codebrain_demo")
    if found is None:
        pytest.fail("codebrain_demo is not installed beside this Python: run `pip install -e .` first")
    return [found]


def _run_demo(workdir: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("codebrain_", "nnUNet_"))}  # the demo sets its own folders
    return subprocess.run([*_demo_command(), "--workdir", str(workdir)], capture_output=True, text=True, env=env,
                          timeout=2700)  # a guard against a hang, not a speed check: loaded machines are slow


def _listed_files(stdout: str) -> list[Path]:
    lines = stdout.split("tables and figures written:", 1)[1].strip().splitlines()
    return [Path(line.strip()) for line in lines if line.strip()]


def test_demo_runs_end_to_end_and_a_rerun_resumes(tmp_path):
    workdir = tmp_path / "demo"
    first = _run_demo(workdir)
    assert first.returncode == 0, first.stderr[-3000:]
    print(first.stdout)

    # the summary names the files it wrote, and they exist
    files = _listed_files(first.stdout)
    names = {path.name for path in files}
    assert {"tables.md", "summary.csv", "summary.json", "table.md", "table.csv", "per_case.csv",
            "dice_bars.png"} <= names, names
    assert any(name.startswith("pattern_") and name.endswith(".png") for name in names)
    assert all(path.is_file() and path.stat().st_size > 0 for path in files)

    # imputation: CodeBrain beats zero-fill on every missing pattern, and the summary prints the same figures
    imputation_dir = next(path.parent for path in files if path.name == "summary.json")
    paper = read_json(imputation_dir / "summary.json")["summary"]["paper"]["image"]
    assert set(paper) == {"codebrain", "zero", "mean"}
    for pattern in all_patterns(4):
        assert paper["codebrain"]["patterns"][pattern]["psnr"] > paper["zero"]["patterns"][pattern]["psnr"], pattern
    assert f"codebrain    {paper['codebrain']['overall']['psnr']:6.2f}" in first.stdout

    # segmentation: the Table-4-shaped table with every row and column
    table = read_json(next(path for path in files if path.name == "table.json"))
    assert table["rows"] == ["zero-fill", "codebrain", "full"]
    assert table["columns"] == ["T1", "T2", "FLAIR", "T1Gd", "mean"]
    for row in table["rows"]:
        assert 0.0 <= table["dice"][row]["mean of regions"]["mean"] <= 1.0

    # a rerun reuses the trained stages and the cached segmentations instead of starting over
    results = workdir / "results"
    finals = sorted(results.glob("*/CodeBrain__*/fold_0/stage*/checkpoint_final.pth"))
    segmentations = sorted(results.glob("*/segmentation/**/*.nii.gz"))
    assert len(finals) == 2 and segmentations
    stamps = {path: path.stat().st_mtime_ns for path in finals + segmentations}
    second = _run_demo(workdir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already finished" in second.stderr
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    assert _listed_files(second.stdout) == files
