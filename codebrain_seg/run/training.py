"""``run_training``: the Python twin of ``codebrain_train`` — train the stages of a registered method on one fold.

Results go to ``$codebrain_results/DatasetXXX_Name/<Method>[tags]__<plans>__<configuration>/fold_F/stage<k>/``
(``codebrain_seg.results_layout``). Everything that is not the default is appended to the method name, in this
order, so variants never share a folder: the variant (``CodeBrain-v1__...``), a code dimension
(``CodeBrain-d5__...``), an ablation other than ``none`` (``CodeBrain-no_fc__...``), and a reconstruction
loss-weight pair that differs from the plans' (``CodeBrain-lm1-la1__...``), and a seed of a seeded experiment
other than the first (``seed_index`` K > 0: ``CodeBrain-seedK__...``, trained with ``seed + K``). An option that
leaves a stage unchanged reuses the plain method's run of that stage (``Method.shared_stages``).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from codebrain_seg import paths
from codebrain_seg.device import avoid_amx_for_3d_training
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import read_json, write_json
from codebrain_seg.plans import Configuration
from codebrain_seg.results_layout import fold_folder, stage_dir, stage_finished
from codebrain_seg.run.methods import Method, get_method
from codebrain_seg.variants import (
    check_ablation,
    check_seed_index,
    check_variant,
    resolve_loss_weights,
    variant_name,
)
from planners.experiment_planner import get_configuration
from planners.plan_and_preprocess import load_plans
from trainers.base_trainer import TrainingOptions
from trainers.distributed import distributed_context

logger = logging.getLogger(__name__)

# A missing-slice (cardiac) dataset plans only these (planners.cardiac_planner): paper size with a GPU, else the CPU one.
MISSING_SLICE_CONFIGURATIONS = ("3d_cardiac", "3d_cardiac_cpu")


def _stages(stage: str | int, method: Method) -> list[int]:
    if not method.trainable:
        raise InputError(f"method {method.name!r} has nothing to train")
    if str(stage) == "all":
        return sorted(method.stages)
    if not str(stage).isdigit() or int(stage) not in method.stages:
        raise InputError(f"stage must be 'all' or one of {sorted(method.stages)}, got {stage!r}")
    return [int(stage)]


def results_folder(dataset_folder: str, method: str, plans_name: str, configuration: str, fold: int,
                   ablation: str = "none", loss_weights: tuple[float, float] | None = None, *,
                   variant: str = "cvpr", code_dim: int | None = None, seed_index: int = 0) -> Path:
    """``$codebrain_results/<dataset>/<Method[-variant][-dD][-ablation][-lmM-laA][-seedK]>__<plans>__<config>/fold_F``.

    ``loss_weights`` is an override of the plans' ``(lambda_m, lambda_a)``; None (the plans' pair) adds nothing;
    ``seed_index`` 0 adds nothing either.
    """
    name = str(get_method(method).folder_name) + variant_name(ablation, loss_weights, variant=variant,
                                                                 code_dim=code_dim, seed_index=seed_index)
    return fold_folder(dataset_folder, name, plans_name, configuration, fold)


def run_training(dataset: str | int, fold: int, configuration: str | None = None, stage: str | int = "all",
                 method: str = "codebrain", ablation: str = "none", iterations: int | None = None,
                 device: str = "auto", continue_training: bool = False, compile: bool | None = None,
                 num_workers: int | None = None, seed: int = 1337, val_every: int | None = None,
                 loss_weights: tuple[float, float] | str | None = None, variant: str = "cvpr",
                 code_dim: int | None = None, seed_index: int = 0, **options: Any) -> dict[int, Path]:
    """Train the requested stage(s) of a method on one fold; returns each trained stage's output folder.

    Args:
        dataset: id, full or short name of a planned and preprocessed dataset.
        fold: index into ``splits_final.json``.
        configuration: plans configuration; default ``2d`` with a GPU, ``2d_cpu`` without (CoPeDiT: ``3d_copedit``
            / ``3d_copedit_cpu``).
        stage: ``'all'`` or one stage number.
        method, ablation: registry entry (``codebrain_seg.run.methods``) and its option
            (``codebrain_seg.variants.CODEBRAIN_ABLATIONS`` for CodeBrain).
        loss_weights: ``(lambda_m, lambda_a)`` (or ``'20,5'``) of the reconstruction loss; None = the plans'.
            A pair other than the plans' is part of the results folder name.
        variant: ``'cvpr'`` or ``'v1'`` (CodeBrain only).
        code_dim: FSQ channels d of a code, each with 5 levels (None: the variant's default; CodeBrain only).
        seed_index: K > 0 trains the K-th extra seed of a seeded experiment (``codebrain_ablate --seeds``): seed
            ``seed + K``, into the ``-seedK`` folder (shared stages: the plain method's ``-seedK`` run). 0 = today's
            run and folder.
        iterations, device, continue_training, compile, num_workers, seed, val_every: see ``codebrain_train``.
        **options: further :class:`trainers.base_trainer.TrainingOptions` fields (batch_size, log_every, ...).
    """
    spec = get_method(method)
    if method != "codebrain":
        avoid_amx_for_3d_training()  # CoPeDiT's 3D networks (and the 2D regression baseline, harmlessly)
    check_ablation(ablation, spec.ablations, method)
    variant, code_dim = check_variant(variant, code_dim)
    if method != "codebrain" and (variant != "cvpr" or code_dim is not None):
        raise InputError(f"--variant and --code-dim configure CodeBrain's codes; the {method!r} method has none "
                         f"(got variant {variant!r}, code dimension {code_dim!r})")
    stages = _stages(stage, spec)
    preprocessed = paths.preprocessed_dataset_dir(dataset)
    plans = load_plans(preprocessed)
    if configuration is None:
        if plans.get("task") == "missing_slices":
            spec = replace(spec, configurations=MISSING_SLICE_CONFIGURATIONS)
        configuration = spec.default_configuration(device)
        logger.info("no configuration given: using %r (%s)", configuration,
                    "a CUDA GPU is available" if configuration == spec.configurations[0] else "no GPU will be used")
    config = get_configuration(plans, configuration)
    splits_path = preprocessed / "splits_final.json"
    if not splits_path.is_file():
        raise MissingFileError(f"{splits_path} is missing: run codebrain_plan_and_preprocess -d {dataset}")
    splits = read_json(splits_path)
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise InputError(f"fold must be an integer in 0..{len(splits) - 1} for {preprocessed.name}, got {fold!r}")
    data_folder = preprocessed / config["data_identifier"]
    if not data_folder.is_dir():
        raise MissingFileError(f"{data_folder} is missing: run codebrain_plan_and_preprocess -d {dataset} "
                               f"-c {configuration}")
    weights, override = resolve_loss_weights(loss_weights, Configuration(config, configuration).loss.reconstruction)
    if variant == "v1" and override is not None:
        raise InputError(f"--loss-weights {override[0]:g},{override[1]:g} does not apply to the v1 variant: its "
                         "Stage I rebuilds one anchor sequence (no available/missing split), weighted by the plans' "
                         "lambda_missing; use it with --variant cvpr")
    named = {"variant": variant, "code_dim": code_dim}
    seed_index = check_seed_index(seed_index)
    fold_dir = results_folder(preprocessed.name, method, plans["plans_name"], configuration, fold, ablation, override,
                              **named, seed_index=seed_index)
    shared_dir = results_folder(preprocessed.name, method, plans["plans_name"], configuration, fold,
                                loss_weights=override, **named, seed_index=seed_index)
    stage_dirs = {k: stage_dir(shared_dir if k in spec.shared_stages.get(ablation, ()) else fold_dir, k)
                  for k in spec.stages}
    identity = {"dataset": preprocessed.name, "fold": fold, "method": method, "ablation": ablation,
                "loss_weights": {"lambda_missing": weights[0], "lambda_available": weights[1]}, **named,
                **({"seed_index": seed_index} if seed_index else {})}
    extra = dict(options.pop("extra", None) or {})
    extra.setdefault("stage_dirs", {str(k): str(v) for k, v in stage_dirs.items()})
    done: dict[int, Path] = {}
    try:
        for number in stages:
            shared = number in spec.shared_stages.get(ablation, ())
            if shared and stage_finished(stage_dirs[number]):
                logger.info("stage %d is shared with the plain method and already finished in %s; reusing it",
                            number, stage_dirs[number])
                continue
            stage_ablation = "none" if shared else ablation
            run_options = TrainingOptions(iterations=iterations, device=device, seed=seed + seed_index,
                                          num_workers=num_workers,
                                          val_every=val_every, compile=compile, continue_training=continue_training,
                                          ablation=stage_ablation, loss_weights=weights, variant=variant,
                                          code_dim=code_dim, extra=extra, **options)
            trainer = spec.stages[number](plans, configuration, data_folder, splits[fold], stage_dirs[number],
                                          run_options, {**identity, "ablation": stage_ablation})
            if distributed_context().is_main:
                # nnU-Net keeps the plans beside the folds, so a model folder is self-contained for inference.
                model_dir = stage_dirs[number].parent.parent
                write_json(model_dir / "plans.json", plans)
                if (preprocessed / "dataset.json").is_file():
                    write_json(model_dir / "dataset.json", read_json(preprocessed / "dataset.json"))
            done[number] = trainer.run()
    finally:
        if distributed_context().world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return done
