"""evaluation/ablation/prompts.py: CoPeDiT's prompt ablation trains one Stage I, Stage II per arm and seed on it,
and scores every (arm, seed) from its own folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from codebrain_seg.results_layout import copedit_folder_name
from evaluation.ablation import prompts, report
from evaluation.ablation.groups import GROUPS, codebrain_groups, needed_stages, parse_groups
from evaluation.ablation.verdicts import UNRESOLVED, YES

DATASET = "Dataset977_P"
CONFIG = "3d_copedit_cpu"
PLANS = {"plans_name": "codebrainPlans", "channel_names": {"0": "T1", "1": "T1Gd", "2": "T2", "3": "FLAIR"},
         "configurations": {"2d_cpu": {"evaluation_slices": 4}}}


def test_seed_folders_of_copedit_options() -> None:
    assert copedit_folder_name("mask", seed_index=2) == "CoPeDiT-mask-seed2"
    assert copedit_folder_name(seed_index=1) == "CoPeDiT-seed1"
    assert copedit_folder_name("mask") == "CoPeDiT-mask"  # seed 0: today's folder


def test_link_stage_one_is_relative_and_keeps_a_real_folder(tmp_path: Path) -> None:
    shared = tmp_path / "CoPeDiT__p__c" / "fold_0" / "stage1"
    shared.mkdir(parents=True)
    (shared / "checkpoint_final.pth").write_text("vae")
    seed_fold = tmp_path / "CoPeDiT-seed1__p__c" / "fold_0"
    link = prompts.link_stage_one(seed_fold, shared)
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert (link / "checkpoint_final.pth").read_text() == "vae"
    assert prompts.link_stage_one(seed_fold, shared) == link  # a rerun keeps it
    own = tmp_path / "CoPeDiT-seed2__p__c" / "fold_0" / "stage1"
    own.mkdir(parents=True)
    assert not prompts.link_stage_one(own.parent, shared).is_symlink()  # someone's own Stage I is not replaced


def test_copedit_group_is_not_a_codebrain_variant() -> None:
    group = GROUPS["copedit_prompts"]
    assert group.method == "copedit" and [row.variant for row in group.rows] == ["mask", "none"]
    groups = parse_groups("rec_fc,copedit_prompts")
    assert [g.name for g in codebrain_groups(groups)] == ["rec_fc"]
    assert len(needed_stages(groups)) == 2  # only rec_fc's two CodeBrain variants are trained by the runner


def _fake_training(calls: list[dict[str, Any]]):
    def run_training(dataset: str, fold: int, configuration: str, *, stage: int, method: str, ablation: str,
                     seed_index: int, **options: Any) -> dict[int, Path]:
        calls.append({"stage": stage, "ablation": ablation, "seed_index": seed_index, "configuration": configuration,
                      "seed": options.get("seed")})
        fold_dir = prompts.arm_folder(dataset, "codebrainPlans", configuration, fold,
                                      "none" if stage == 1 else ablation, seed_index)
        out = fold_dir / f"stage{stage}"
        if stage == 1:
            out.mkdir(parents=True)
            (out / "metrics.jsonl").write_text(json.dumps(
                {"kind": "val", "iteration": 20, "count_accuracy": 0.75, "count_chance": 0.43,
                 "position_accuracy": 0.9, "position_exact": 0.5}) + "\n")
        else:  # Stage II reads its Stage I from its own seed's plain folder, as run_training does
            plain = prompts.arm_folder(dataset, "codebrainPlans", configuration, fold, "none", seed_index)
            assert (plain / "stage1" / "checkpoint_final.pth").is_file()
            out.mkdir(parents=True)
        (out / "checkpoint_final.pth").write_text(f"stage {stage}")
        return {stage: out}
    return run_training


def _fake_evaluation(evaluated: list[tuple[str, int]], psnr: dict[str, list[float]]):
    def evaluate_imputation(dataset: str, fold: int, configuration: str, cases: str, *, methods: list[str],
                            output_dir: Path, seed_index: int, evaluation_slices: int, **options: Any) -> Path:
        method = methods[0]
        evaluated.append((method, seed_index))
        value = psnr[method][seed_index]
        scores = {key: {"psnr": value, "ssim": 50.0, "mae": 90.0} for key in ("overall", "O->O", "M->O")}
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "summary.json").write_text(json.dumps({
            "cases": cases, "evaluation_slices": evaluation_slices,
            "patterns": prompts.all_patterns(4), "case_ids": ["a", "b"],
            "methods": {method: {"model": {"stage1_iteration": 20, "stage2_iteration": 10}}},
            "summary": {"paper": {"image": {method: scores}}}}))
        return output_dir
    return evaluate_imputation


def test_one_stage_one_for_every_arm_and_seed_and_the_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("codebrain_results", str(tmp_path / "results"))
    monkeypatch.setenv("codebrain_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setattr(prompts, "load_plans", lambda folder: PLANS)
    calls: list[dict[str, Any]] = []
    evaluated: list[tuple[str, int]] = []
    monkeypatch.setattr(prompts, "run_training", _fake_training(calls))
    # learned prompts ahead by 1 dB, seeds within 0.2 dB: held
    psnr = {"copedit": [17.0, 17.2, 17.1], "copedit-mask": [16.0, 16.1, 16.2]}
    monkeypatch.setattr(prompts, "evaluate_imputation", _fake_evaluation(evaluated, psnr))
    group = GROUPS["copedit_prompts"]
    rows, note, trained = prompts.run_copedit_group(group, DATASET, 0, "2d_cpu", seeds=3, device="cpu", seed=7)

    assert [(c["stage"], c["ablation"], c["seed_index"]) for c in calls] == [
        (1, "none", 0), (2, "mask", 0), (2, "none", 0), (2, "mask", 1), (2, "none", 1), (2, "mask", 2),
        (2, "none", 2)]
    assert {c["configuration"] for c in calls} == {CONFIG}  # CoPeDiT's own 3D configuration on a CPU
    root = tmp_path / "results" / DATASET
    for seed in (1, 2):
        link = root / f"CoPeDiT-seed{seed}__codebrainPlans__{CONFIG}" / "fold_0" / "stage1"
        assert link.is_symlink() and link.resolve() == (root / f"CoPeDiT__codebrainPlans__{CONFIG}" / "fold_0"
                                                        / "stage1").resolve()
    assert trained[f"CoPeDiT__codebrainPlans__{CONFIG}"] == [1, 2]
    assert sorted(evaluated) == sorted((m, s) for m in psnr for s in range(3))
    assert [r["model"] for r in rows[("w/ Mask Codes", "imp")]] == [
        f"CoPeDiT-mask__codebrainPlans__{CONFIG}", f"CoPeDiT-mask-seed1__codebrainPlans__{CONFIG}",
        f"CoPeDiT-mask-seed2__codebrainPlans__{CONFIG}"]
    assert "count 75.0 % (chance 43.0 %)" in note and "whole pattern 50.0 %" in note

    table = report.group_table(group, rows)
    assert table["seeds"] == 3
    assert table["claims"][0]["verdict"] == YES

    # a rerun trains nothing and rescoring is skipped (the evaluations are current)
    calls.clear(), evaluated.clear()
    _, _, trained = prompts.run_copedit_group(group, DATASET, 0, "2d_cpu", seeds=3, device="cpu")
    assert calls == [] and evaluated == [] and trained == {}


def test_a_gap_inside_the_seed_spread_is_not_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("codebrain_results", str(tmp_path))
    monkeypatch.setenv("codebrain_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setattr(prompts, "load_plans", lambda folder: PLANS)
    monkeypatch.setattr(prompts, "run_training", _fake_training([]))
    psnr = {"copedit": [16.9, 17.6], "copedit-mask": [16.8, 17.3]}  # +0.2 dB, SD about 0.35-0.5 dB
    monkeypatch.setattr(prompts, "evaluate_imputation", _fake_evaluation([], psnr))
    rows, _, _ = prompts.run_copedit_group(GROUPS["copedit_prompts"], DATASET, 0, "2d_cpu", seeds=2, device="cpu")
    assert report.group_table(GROUPS["copedit_prompts"], rows)["claims"][0]["verdict"] == UNRESOLVED
