"""evaluation/ablation/cache.py: a finished stage is reused only in the precision asked for."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codebrain_seg.errors import InputError
from evaluation.ablation.cache import check_reused_precision


def _finished_stage(folder: Path, precision: str) -> Path:
    folder.mkdir(parents=True)
    torch.save({"format_version": 1, "iteration": 10, "precision": precision}, folder / "checkpoint_final.pth")
    return folder


def test_a_finished_stage_of_another_precision_is_refused_with_its_folder(tmp_path: Path) -> None:
    stage = _finished_stage(tmp_path / "CodeBrain__codebrainPlans__2d_cpu" / "fold_0" / "stage1", "bf16")
    with pytest.raises(InputError) as caught:
        check_reused_precision(stage, "fp32")
    message = str(caught.value)
    assert str(stage) in message and "finished in bf16 but --precision fp32" in message
    assert "$codebrain_results" in message and "\n" not in message


def test_the_same_precision_or_auto_reuses_it(tmp_path: Path) -> None:
    stage = _finished_stage(tmp_path / "stage1", "bf16")
    assert check_reused_precision(stage, "bf16") is None
    assert check_reused_precision(stage, "auto") is None
    # auto does not even read the file: a stage without a readable checkpoint is left to the usual checks
    assert check_reused_precision(tmp_path / "absent", "auto") is None
