"""CoPeDiT's prompt ablation (groups whose ``method`` is ``copedit``, e.g. ``copedit_prompts``): learned
completeness prompts against binary mask codes, with Stage I held fixed.

The prompts are computed by the frozen tokenizer (CoPeVAE, Stage I), so the arms differ only in what MDiT3D
(Stage II) is conditioned on. A fair comparison therefore keeps one tokenizer for every arm and seed:

1. Stage I is trained once (seed 0, the ordinary ``CoPeDiT__<plans>__<config>/fold_F/stage1``) or reused.
2. Seed ``s`` trains Stage II of every arm with the training seed ``seed + s``. Seed ``s > 0`` lives in the
   ``-seed<s>`` folders (``CoPeDiT-seed1__...``, ``CoPeDiT-mask-seed1__...``); their ``stage1`` is a symbolic link
   to seed 0's, created here (a real folder already there is left alone and used as it is, with a warning), so a
   seed varies the diffusion model only. Finished stages are reused, an interrupted one resumes.
3. Each (arm, seed) is scored by the imputation harness with the paper protocol (methods ``copedit`` and
   ``copedit-mask``) into ``<model>/fold_F/imputation_eval/<cases>/``, reused while newer than its checkpoints.

The results have the shape :func:`evaluation.ablation.report.group_table` takes, so the tables, the seed spread
and the verdicts are the CodeBrain groups'. The tokenizer's pretext accuracies (its last validation record:
count, position and whole-pattern accuracy against chance) are appended to the table's note: learned prompts can
only help if the pretext tasks were learned.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from codebrain_seg import paths
from codebrain_seg.io import read_json
from codebrain_seg.results_layout import cases_tag, stage_dir, stage_finished
from codebrain_seg.run.methods import get_method
from codebrain_seg.run.training import results_folder, run_training
from evaluation.ablation.cache import check_reused_precision, evaluation_is_current
from evaluation.ablation.groups import Group
from evaluation.imputation.aggregate import all_patterns
from evaluation.imputation.evaluate import evaluate_imputation
from planners.experiment_planner import get_configuration
from planners.plan_and_preprocess import load_plans
from trainers.training_logs import read_metrics

logger = logging.getLogger(__name__)

METHOD = "copedit"
# The imputation method that loads each CoPeDiT option's model (codebrain_seg.run.methods).
EVALUATED_AS = {"none": "copedit", "mask": "copedit-mask"}
PRETEXT_KEYS = ("count_accuracy", "count_chance", "position_accuracy", "position_chance", "position_exact")


def arm_folder(dataset_name: str, plans_name: str, configuration: str, fold: int, option: str,
               seed_index: int) -> Path:
    """``fold_F`` of one arm and seed, e.g. ``CoPeDiT-mask-seed1__<plans>__3d_copedit_cpu/fold_0``."""
    return results_folder(dataset_name, METHOD, plans_name, configuration, fold, ablation=option,
                          seed_index=seed_index)


def link_stage_one(seed_fold: Path, shared_stage: Path) -> Path:
    """Make ``seed_fold/stage1`` a relative symbolic link to ``shared_stage`` (seed 0's tokenizer); returns it.

    A link that is already there is kept; a real folder is kept too (someone trained that seed's own Stage I)
    and used as it is, with a warning, since the arms then no longer share one tokenizer.
    """
    link = stage_dir(seed_fold, 1)
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            logger.warning("prompt ablation: %s is a folder of its own, not a link to %s; this seed's arms use it",
                           link, shared_stage)
        return link
    seed_fold.mkdir(parents=True, exist_ok=True)
    temp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    temp.unlink(missing_ok=True)
    temp.symlink_to(os.path.relpath(shared_stage, seed_fold), target_is_directory=True)
    temp.replace(link)  # appears whole: a rerun never finds half a link
    return link


def train_arms(dataset_name: str, fold: int, configuration: str, plans_name: str, options: Sequence[str],
               seeds: int, iterations: int | None, device: str, **training_options: Any) -> dict[str, list[int]]:
    """Stage I once, then Stage II of every arm for every seed (module docstring); returns ``{folder: stages
    trained now}``."""
    trained: dict[str, list[int]] = {}
    shared = stage_dir(arm_folder(dataset_name, plans_name, configuration, fold, "none", 0), 1)
    jobs = [(1, "none", 0)] + [(2, option, s) for s in range(seeds) for option in options]
    for stage, option, seed_index in jobs:
        fold_dir = arm_folder(dataset_name, plans_name, configuration, fold, option, seed_index)
        if stage == 2 and seed_index > 0:
            link_stage_one(arm_folder(dataset_name, plans_name, configuration, fold, "none", seed_index), shared)
        if stage_finished(stage_dir(fold_dir, stage) if stage == 2 else shared):
            check_reused_precision(stage_dir(fold_dir, stage) if stage == 2 else shared,
                                   training_options.get("precision", "auto"))
            logger.info("prompt ablation: %s stage %d is finished; reused, not retrained", fold_dir.parent.name,
                        stage)
            continue
        logger.info("prompt ablation: training %s stage %d", fold_dir.parent.name, stage)
        run_training(dataset_name, fold, configuration, stage=stage, method=METHOD, ablation=option,
                     iterations=iterations, device=device, continue_training=True, seed_index=seed_index,
                     **training_options)
        trained.setdefault(fold_dir.parent.name, []).append(stage)
    return trained


def evaluate_arm(dataset_name: str, plans: dict[str, Any], fold: int, evaluation_configuration: str,
                 fold_dir: Path, stage_one: Path, option: str, seed_index: int, cases: str, device: str,
                 evaluation_slices: int | None, batch_size: int | None) -> dict[str, Any]:
    """Score one arm and seed with the paper protocol (reusing an evaluation newer than ``stage_one``'s and the
    arm's Stage II checkpoint); returns the row result :func:`evaluation.ablation.report.group_table` takes."""
    method = EVALUATED_AS[option]
    tag = cases_tag(cases)
    folder = fold_dir / "imputation_eval" / tag
    count = int(evaluation_slices if evaluation_slices is not None
                else get_configuration(plans, evaluation_configuration)["evaluation_slices"])
    checkpoints = [stage_one / "checkpoint_final.pth", stage_dir(fold_dir, 2) / "checkpoint_final.pth"]
    settings = {"cases": cases, "evaluation_slices": count, "patterns": all_patterns(len(plans["channel_names"]))}
    summary = evaluation_is_current(folder, checkpoints, settings, (method,))
    if summary is None:
        evaluate_imputation(dataset_name, fold, evaluation_configuration, cases, protocols=["paper"],
                            methods=[method], device=device, batch_size=batch_size, output_dir=folder,
                            figure_cases=0, evaluation_slices=count, seed_index=seed_index)
        summary = read_json(folder / "summary.json")
    else:
        logger.info("prompt ablation: %s evaluation is current (%s); reused", fold_dir.parent.name, folder)
    info = summary.get("methods", {}).get(method, {}).get("model", {})
    return {"summary": summary["summary"]["paper"]["image"][method], "model": fold_dir.parent.name,
            "iterations": {"stage1": info.get("stage1_iteration"), "stage2": info.get("stage2_iteration")},
            "cases": len(summary.get("case_ids", [])), "evaluation": str(folder), "seed_index": seed_index,
            "training_precision": info.get("training_precision")}


def pretext_accuracy_note(stage_one: Path) -> str:
    """One sentence with the tokenizer's pretext accuracies from its last validation record ('' if none)."""
    records = [r for r in read_metrics(stage_one) if r.get("kind") == "val" and "count_accuracy" in r]
    if not records:
        return ""
    last = records[-1]
    return (f" Shared Stage I (iteration {last.get('iteration')}) pretext accuracy on the validation cases: "
            f"count {100 * last['count_accuracy']:.1f} % (chance {100 * last.get('count_chance', 0):.1f} %), "
            f"position {100 * last['position_accuracy']:.1f} % per sequence (chance 50 %), whole pattern "
            f"{100 * last.get('position_exact', 0):.1f} %.")


def run_copedit_group(group: Group, dataset_name: str, fold: int, evaluation_configuration: str, seeds: int = 1,
                      iterations: int | None = None, device: str = "auto", cases: str = "val",
                      evaluation_slices: int | None = None, batch_size: int | None = None,
                      **training_options: Any) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], str,
                                                        dict[str, list[int]]]:
    """Train and score a CoPeDiT group (module docstring).

    Args:
        group: a group with ``method == 'copedit'``; each row's ``variant`` is a CoPeDiT option (``none``,
            ``mask``).
        dataset_name: preprocessed dataset folder name.
        evaluation_configuration: the 2D configuration the harness scores on (``codebrain_ablate -c``); CoPeDiT
            trains its own default 3D configuration (``3d_copedit`` with a GPU, ``3d_copedit_cpu`` without).
        seeds, iterations, device, cases, evaluation_slices, batch_size, training_options: as
            :func:`evaluation.ablation.run.run_ablations`.

    Returns:
        ``({(row label, stage): [row result per seed]}, note with the pretext accuracies, {folder: stages
        trained now})``.
    """
    plans = load_plans(paths.preprocessed_root() / dataset_name)
    configuration = get_method(METHOD).default_configuration(device)
    options = [row.variant for row in group.rows]
    trained = train_arms(dataset_name, fold, configuration, plans["plans_name"], options, seeds, iterations,
                         device, **training_options)
    shared = stage_dir(arm_folder(dataset_name, plans["plans_name"], configuration, fold, "none", 0), 1)
    eval_device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in group.rows:
        for seed_index in range(seeds):
            fold_dir = arm_folder(dataset_name, plans["plans_name"], configuration, fold, row.variant, seed_index)
            results.setdefault((row.label, "imp"), []).append(
                evaluate_arm(dataset_name, plans, fold, evaluation_configuration, fold_dir, shared, row.variant,
                             seed_index, cases, eval_device, evaluation_slices, batch_size))
    return results, pretext_accuracy_note(shared), trained

