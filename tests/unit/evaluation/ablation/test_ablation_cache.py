"""evaluation/ablation/cache.py: a finished stage is reused only in the precision (and Stage II's start) asked for."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codebrain_seg.errors import InputError
from evaluation.ablation.cache import check_reused_precision, check_reused_prior_init, scored_checkpoint


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


def test_a_stage_two_started_otherwise_is_refused_and_old_checkpoints_count_as_random(tmp_path: Path) -> None:
    warm = tmp_path / "CodeBrain__codebrainPlans__2d_cpu" / "fold_0" / "stage2"
    warm.mkdir(parents=True)
    torch.save({"format_version": 1, "iteration": 10, "prior_initialised_from": "common_encoder"},
               warm / "checkpoint_final.pth")
    with pytest.raises(InputError) as caught:
        check_reused_prior_init(warm, "random")
    message = str(caught.value)
    assert str(warm) in message and "started from common_encoder" in message and "--prior-init random" in message
    assert check_reused_prior_init(warm, "common_encoder") is None
    old = _finished_stage(tmp_path / "old" / "stage2", "bf16")  # written before the warm start: no record
    assert check_reused_prior_init(old, "random") is None
    with pytest.raises(InputError, match="started from random"):
        check_reused_prior_init(old, "common_encoder")


def _checkpoint(path: Path, iteration: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format_version": 1, "iteration": iteration, "precision": "fp32"}, path)


def test_the_best_checkpoint_is_scored_as_the_final_one_only_when_it_is_the_final_iteration(tmp_path: Path) -> None:
    stage = tmp_path / "stage1"
    _checkpoint(stage / "checkpoint_final.pth", 1000)
    assert scored_checkpoint(stage, "best") == "best"  # no best checkpoint: left to the evaluation's error
    _checkpoint(stage / "checkpoint_best.pth", 750)
    assert scored_checkpoint(stage, "best") == "best"  # an earlier validation won: its own evaluation
    _checkpoint(stage / "checkpoint_best.pth", 1000)
    assert scored_checkpoint(stage, "best") == "final"  # the last validation won: the same weights, scored once
    assert scored_checkpoint(stage, "final") == "final" and scored_checkpoint(tmp_path / "absent", "final") == "final"
