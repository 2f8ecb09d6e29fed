"""Train, evaluate and tabulate the ablation groups (``evaluation.ablation.groups``): ``codebrain_ablate``'s twin.

1. Every variant the selected groups need is trained through ``codebrain_seg.run.training.run_training``, only the stages it needs
   (Stage I for reconstruction rows, both for imputation rows). A stage whose ``checkpoint_final.pth`` exists is
   reused as it is, never retrained (its iteration count is reported in the tables); an interrupted one resumes
   from its latest checkpoint. Variants that resolve to the same results folder (the plain method in several
   groups, a loss-weight pair equal to the plans') are trained once.
2. Each (model, stage) is scored once with the paper protocol: imputation by the normal harness
   (``evaluation.imputation.evaluate.evaluate_imputation``, method ``codebrain``) into
   ``<model>/fold_F/imputation_eval/<cases>/``, reconstruction from oracle codes
   (``evaluation.ablation.reconstruction``) into ``<model>/fold_F/reconstruction_eval/<cases>/``. An evaluation
   newer than the checkpoints it scored, with the same cases, slices and patterns, is reused. CoPeDiT's groups
   (``Group.method == 'copedit'``, the prompt ablation) are trained and scored by :mod:`evaluation.ablation.prompts`
   instead (one Stage I shared by every arm and seed).
3. The tables go to ``$codebrain_results/DatasetXXX_Name/ablations__<plans>__<configuration>/fold_F/<cases>/``
   (``evaluation.ablation.report``).

**Seeds** (``seeds=N``): every arm is trained N times, seed ``s`` with the training seed ``seed + s``, seed 0 in
the ordinary results folder (so a single-seed run is exactly the run without seeds, and its models are reused by
a seeded one) and seed ``s > 0`` in the ``-seed<s>`` folder of the same variant (``CodeBrain-no_fc-seed2__...``),
each cached and resumable on its own. Seed 0 of every arm trains before seed 1 of any, so a run stopped early
leaves complete tables for the seeds it finished. Each seed is scored on its own; the report gives per arm the
mean and the sample standard deviation over seeds and decides the papers' orderings by
:mod:`evaluation.ablation.verdicts`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from codebrain_seg import paths
from codebrain_seg.errors import InputError
from codebrain_seg.io import read_json
from codebrain_seg.plans import Configuration
from codebrain_seg.results_layout import cases_tag
from codebrain_seg.run.methods import get_method
from codebrain_seg.run.training import results_folder, run_training
from codebrain_seg.variants import resolve_loss_weights
from evaluation.ablation import report
from evaluation.ablation.cache import (
    check_reused_precision,
    check_reused_prior_init,
    evaluation_is_current,
    scored_checkpoint,
)
from evaluation.ablation.groups import (
    Group,
    Variant,
    codebrain_groups,
    evaluations,
    needed_stages,
    parse_groups,
)
from evaluation.ablation.prompts import run_copedit_group
from evaluation.ablation.reconstruction import GIVEN_METHOD, evaluate_reconstruction, evaluation_tag
from evaluation.ablation.reconstruction import METHOD as ORACLE_METHOD
from evaluation.imputation.aggregate import all_patterns
from evaluation.imputation.evaluate import evaluate_imputation
from planners.experiment_planner import get_configuration
from planners.plan_and_preprocess import load_plans

logger = logging.getLogger(__name__)

METHOD = "codebrain"


@dataclass(frozen=True)
class TrainedModel:
    """Where a variant lives: its ``fold_F`` folder, the folder of each stage and the stages the groups need."""

    variant: Variant
    folder: Path
    stage_dirs: dict[int, Path]
    stages: tuple[int, ...]

    @property
    def name(self) -> str:
        """Results folder name, e.g. ``CodeBrain-no_fc__codebrainPlans__2d_cpu``."""
        return self.folder.parent.name


def check_seeds(seeds: int) -> int:
    """``seeds`` if it is an integer >= 1; InputError otherwise (one line, as the command prints it)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"seeds must be an integer >= 1 (1 = one training per arm, as without --seeds), "
                         f"got {seeds!r}")
    return seeds


def seeded(variant: Variant, seed_index: int) -> Variant:
    """The variant of seed ``seed_index`` (0 = the group's own, the ordinary run)."""
    return replace(variant, seed_index=seed_index)


def resolve_models(groups: Sequence[Group], dataset_name: str, plans: dict[str, Any], configuration: str,
                   fold: int, seeds: int = 1) -> dict[Variant, TrainedModel]:
    """Every variant of the groups, for each seed, -> its model (variants resolving to one folder share one object).

    The keys of seed 0 are the groups' own variants; seed ``s > 0`` adds ``seeded(variant, s)`` keys, whose models
    live in the ``-seed<s>`` folders. Seed 0's models come first, in the groups' order.
    """
    config = get_configuration(plans, configuration)
    spec = get_method(METHOD)
    folders: dict[Variant, Path] = {}
    entries: dict[Path, tuple[Variant, dict[int, Path], set[int]]] = {}
    needed = needed_stages(groups)
    for variant, stages in ((seeded(v, s), st) for s in range(check_seeds(seeds)) for v, st in needed.items()):
        planned = Configuration(config, configuration).loss.reconstruction
        _, override = resolve_loss_weights(variant.loss_weights, planned)
        selection = {**variant.as_options(), "loss_weights": override, "seed_index": variant.seed_index}
        folder = results_folder(dataset_name, METHOD, plans["plans_name"], configuration, fold, **selection)
        # Mirrors run_training: an ablation that leaves a stage unchanged reads the plain method's run of it.
        shared = results_folder(dataset_name, METHOD, plans["plans_name"], configuration, fold,
                                **{**selection, "ablation": "none"})
        stage_dirs = {k: (shared if k in spec.shared_stages.get(variant.ablation, ()) else folder) / f"stage{k}"
                      for k in spec.stages}
        first, _, wanted = entries.get(folder, (variant, stage_dirs, set()))
        entries[folder] = (first, stage_dirs, wanted | set(stages))
        folders[variant] = folder
    models = {folder: TrainedModel(variant, folder, stage_dirs, tuple(sorted(wanted)))
              for folder, (variant, stage_dirs, wanted) in entries.items()}
    return {variant: models[folder] for variant, folder in folders.items()}


def finished(stage_dir: Path) -> bool:
    """A stage is finished when its final checkpoint exists."""
    return (stage_dir / "checkpoint_final.pth").is_file()


def train_models(dataset: str | int, fold: int, configuration: str, models: Sequence[TrainedModel],
                 iterations: int | None = None, device: str = "auto", **training_options: Any) -> dict[str, list[int]]:
    """Train the missing stages of each model in order; returns ``{model name: stages trained now}``.

    A finished stage is reused, after :func:`check_reused_precision` against ``training_options['precision']``
    and, for Stage II, :func:`check_reused_prior_init` (every arm's prior encoder starts from random weights unless
    ``training_options['prior_init']`` says otherwise).
    """
    # Like for like: an arm without F_c has no common encoder for Stage II to start from, so every arm's prior
    # encoder starts from random weights, as in the papers' ablations.
    training_options.setdefault("prior_init", "random")
    if iterations is not None:
        # Only the final checkpoint is scored: validating twice per stage shows the curve without the trainer's
        # default of ten validations, which on real cases costs as much as the training itself.
        training_options.setdefault("val_every", max(1, iterations // 2))
    trained: dict[str, list[int]] = {}
    for model in models:
        for stage in model.stages:
            if finished(model.stage_dirs[stage]):
                check_reused_precision(model.stage_dirs[stage], training_options.get("precision", "auto"))
                if stage == 2:
                    check_reused_prior_init(model.stage_dirs[stage], training_options["prior_init"])
                logger.info("ablation: %s stage %d is finished (%s); reused, not retrained", model.name, stage,
                            model.stage_dirs[stage])
                continue
            logger.info("ablation: training %s stage %d", model.name, stage)
            run_training(dataset, fold, configuration, stage=stage, method=METHOD, iterations=iterations,
                         device=device, continue_training=True, **model.variant.as_options(),
                         seed_index=model.variant.seed_index, **training_options)
            trained.setdefault(model.name, []).append(stage)
    return trained


def evaluate_model(dataset_name: str, fold: int, configuration: str, model: TrainedModel, stage: str,
                   cases: str = "val", device: str = "cpu", evaluation_slices: int | None = None,
                   batch_size: int | None = None, fc_input: str = "masked", checkpoint: str = "final"
                   ) -> dict[str, Any]:
    """Score one model on ``rec`` or ``imp`` (paper protocol), reusing a current evaluation; returns its summary.

    ``fc_input='zeros'`` (``rec`` only) is the F_c-reliance diagnostic and ``checkpoint='best'`` (``rec`` only)
    scores the best Stage I checkpoint, each into its own folder.
    """
    plans = load_plans(paths.preprocessed_root() / dataset_name)
    count = int(evaluation_slices if evaluation_slices is not None
                else get_configuration(plans, configuration)["evaluation_slices"])
    settings = {"cases": cases, "evaluation_slices": count, "patterns": all_patterns(len(plans["channel_names"]))}
    if fc_input != "masked":
        if stage != "rec":
            raise InputError(f"the F_c input can only be changed for Stage I reconstruction, not {stage!r}")
        settings["fc_input"] = fc_input  # today's evaluations carry no such key, so it is only checked here
    if checkpoint != "final":
        if stage != "rec":
            raise InputError(f"only Stage I reconstruction scores the best checkpoint, not {stage!r}")
        settings["checkpoint"] = checkpoint
    folder = _evaluation_dir(model, stage, cases, fc_input, checkpoint)
    if stage == "rec":
        checkpoints = [model.stage_dirs[1] / f"checkpoint_{checkpoint}.pth"]
        methods = (ORACLE_METHOD, GIVEN_METHOD)  # an evaluation from before the given sequences were scored is redone
    else:
        checkpoints = [model.stage_dirs[k] / "checkpoint_final.pth" for k in (1, 2)]
        methods = (METHOD,)
    current = evaluation_is_current(folder, checkpoints, settings, methods)
    if current is not None:
        logger.info("ablation: %s %s evaluation is current (%s); reused", model.name, stage, folder)
        return current
    if stage == "rec":
        evaluate_reconstruction(dataset_name, fold, configuration, model.stage_dirs[1], folder, cases, device,
                                batch_size, count, fc_input=fc_input, checkpoint=checkpoint)
    else:
        # The model folder is selected by the same switches (and seed) that trained it.
        evaluate_imputation(dataset_name, fold, configuration, cases, protocols=["paper"], methods=[METHOD],
                            device=device, batch_size=batch_size, output_dir=folder, figure_cases=0,
                            evaluation_slices=count, **model.variant.as_options(),
                            seed_index=model.variant.seed_index)
    return read_json(folder / "summary.json")


def _evaluation_dir(model: TrainedModel, stage: str, cases: str, fc_input: str = "masked",
                    checkpoint: str = "final") -> Path:
    """``<model>/fold_F/{reconstruction,imputation}_eval/<cases>`` (the diagnostic: ``<cases>-fc_zeros``)."""
    if stage == "rec":
        return model.folder / "reconstruction_eval" / evaluation_tag(cases, fc_input, checkpoint)
    tag = cases_tag(cases)
    return model.folder / "imputation_eval" / tag


def _row_result(model: TrainedModel, stage: str, summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What the report needs of one (model, stage) evaluation."""
    method = ORACLE_METHOD if stage == "rec" else METHOD
    info = summary.get("methods", {}).get(method, {}).get("model", {})
    iterations = {"stage1": info.get("stage1_iteration")}
    if stage == "imp":
        iterations["stage2"] = info.get("stage2_iteration")
    scored = summary["summary"]["paper"]["image"]
    return {"summary": scored[method], "model": model.name,
            "given": scored.get(GIVEN_METHOD) if stage == "rec" else None,
            "iterations": iterations, "cases": len(summary.get("case_ids", [])),
            "training_precision": info.get("training_precision"),
            "evaluation": str(folder), "seed_index": model.variant.seed_index}


def ablation_folder(dataset: str | int, plans_name: str, configuration: str, fold: int, cases: str) -> Path:
    """``$codebrain_results/DatasetXXX_Name/ablations__<plans>__<configuration>/fold_F/<cases>``."""
    tag = cases_tag(cases)
    return (paths.results_dataset_dir(dataset) / f"ablations__{plans_name}__{configuration}" / f"fold_{fold}"
            / tag)


def run_ablations(dataset: str | int, fold: int = 0, configuration: str | None = None,
                  which: str | Sequence[str] | None = ("rec_fc", "grading"), iterations: int | None = None,
                  device: str = "auto", cases: str = "val", evaluation_slices: int | None = None,
                  batch_size: int | None = None, output_dir: Path | None = None, seeds: int = 1,
                  **training_options: Any) -> Path:
    """Train the variants the groups need, evaluate them and write the ablation tables; returns the tables' folder.

    Args:
        dataset: id or name of a planned and preprocessed dataset.
        fold: fold (its training cases train, its validation cases evaluate with ``cases='val'``).
        configuration: plans configuration (default: the method's ``default_configuration(device)``).
        which: group names (``evaluation.ablation.groups.GROUPS``), comma-separated or a list; None = all.
        iterations: iterations per trained stage (default: the plans'); finished stages are reused as they are.
        device: ``auto``, ``cpu`` or ``cuda`` (training and evaluation).
        cases: ``val``, ``test`` or a folder of complete cases.
        evaluation_slices: middle slices scored per case (default: the configuration's).
        batch_size: slices per forward pass in the evaluations.
        output_dir: where the tables go (default :func:`ablation_folder`).
        seeds: trainings per arm (module docstring): seed ``s`` uses the training seed ``seed + s`` (``seed`` of
            ``training_options``, default 1337) and, for ``s > 0``, the ``-seed<s>`` results folder; 1 = one
            training per arm in today's folders.
        **training_options: further ``run_training`` options (seed, num_threads, val_every, ...).

    Raises:
        ValueError: unknown group or device, bad fold, number of slices or of seeds.
    """
    groups = parse_groups(which)
    check_seeds(seeds)
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if evaluation_slices is not None and int(evaluation_slices) < 1:
        raise InputError(f"evaluation_slices must be >= 1, got {evaluation_slices}")
    dataset_name = paths.resolve_dataset(dataset)
    plans = load_plans(paths.preprocessed_root() / dataset_name)
    configuration = configuration or get_method(METHOD).default_configuration(device)
    get_configuration(plans, configuration)  # a clear error for an unknown configuration, before any training
    models = resolve_models(codebrain_groups(groups), dataset_name, plans, configuration, fold, seeds)
    unique = list({model.folder: model for model in models.values()}.values())
    logger.info("ablation groups %s, %d seed(s): %d model(s): %s", ", ".join(g.name for g in groups), seeds,
                len(unique), ", ".join(f"{m.name} (stage {'+'.join(map(str, m.stages))})" for m in unique))
    trained = train_models(dataset_name, fold, configuration, unique, iterations, device, **training_options)
    eval_device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
    results: dict[tuple[Variant, str, str], list[dict[str, Any]]] = {}
    for variant, stage, fc_input, requested in evaluations(groups):
        for seed_index in range(seeds):
            model = models[seeded(variant, seed_index)]
            checkpoint = scored_checkpoint(model.stage_dirs[1], requested) if stage == "rec" else requested
            summary = evaluate_model(dataset_name, fold, configuration, model, stage, cases, eval_device,
                                     evaluation_slices, batch_size, fc_input, checkpoint)
            folder = _evaluation_dir(model, stage, cases, fc_input, checkpoint)
            results.setdefault((variant, stage, fc_input, requested), []).append(
                _row_result(model, stage, summary, folder))
    out_dir = Path(output_dir) if output_dir else ablation_folder(dataset_name, plans["plans_name"], configuration,
                                                                   fold, cases)
    meta = {"dataset": dataset_name, "fold": fold, "configuration": configuration, "cases": cases,
            "iterations_requested": iterations, "trained_now": trained, "seeds": seeds,
            "base_seed": training_options.get("seed")}  # None: run_training's default
    tables = []
    for group in groups:
        if group.method == "codebrain":
            table = report.group_table(group, {(row.label, stage): results[(row.variant, stage, *row.scoring(stage))]
                                               for row in group.rows for stage in group.stages})
        else:
            rows, note, trained_now = run_copedit_group(group, dataset_name, fold, configuration, seeds, iterations,
                                                        device, cases, evaluation_slices, batch_size,
                                                        **training_options)
            trained.update(trained_now)
            table = report.group_table(group, rows)
            table["note"] += note
        tables.append(table)
    report.write_report(out_dir, tables, meta)
    return out_dir
