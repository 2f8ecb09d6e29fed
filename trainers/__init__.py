"""Training: an explicit registry of methods, each a sequence of stage trainers built on one training loop.

``run_training`` is the Python twin of ``codebrain_train``. Results go to
``$codebrain_results/DatasetXXX_Name/<Method>__<plans>__<configuration>/fold_F/stage<k>/``. Everything that is
not the default is appended to the method name, in this order, so variants never share a folder: the variant
(``CodeBrain-v1__...``), a code dimension (``CodeBrain-d5__...``, ``CodeBrain-v1-d5__...``), an ablation other than
``none`` (``CodeBrain-no_fc__...``), and a reconstruction loss-weight pair that differs from the plans'
(``CodeBrain-lm1-la1__...``, ``CodeBrain-vq-lm10-la5__...``).

**Variants** (:data:`CODEBRAIN_VARIANTS`): ``cvpr`` (default) is the CVPR 2026 full-stack method; ``v1`` the
arXiv v1 paper's per-modality anchor codes (``codebrain_seg.networks.codebrain``). **Code dimension**
(``code_dim``, the v1 paper's Fig. 6): ``d`` FSQ channels of ``L = 5`` levels each (the v1 paper varies d at
L = 5); None keeps the variant's default: the plans' ``fsq_levels`` for cvpr (the paper's [8,8,8,5,5,5]), the v1
paper's d = 7, L = 5 for v1 (so ``code_dim=7`` with v1 is the plain v1 run and adds no tag).

Another method (e.g. a regression baseline) plugs in with :func:`register_method` without touching this package's
loop.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from codebrain_seg import paths

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodSpec:
    """A trainable method: its folder name, its stage trainers in order, and the ablations it accepts."""

    folder_name: str
    stages: dict[int, Callable[[], type]]  # stage number -> lazy import of its trainer class
    ablations: tuple[str, ...] = ("none",)
    # Ablations that do not change a stage reuse the plain method's run of that stage.
    shared_stages: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Default plans configurations (with a GPU, without one).
    configurations: tuple[str, str] = ("2d", "2d_cpu")


def _codebrain_stage(stage: int) -> Callable[[], type]:
    def load() -> type:
        if stage == 1:
            from trainers.stage1 import CodeBrainStageOneTrainer
            return CodeBrainStageOneTrainer
        from trainers.stage2 import CodeBrainStageTwoTrainer
        return CodeBrainStageTwoTrainer
    return load


def _regression_stage() -> type:
    from trainers.regression import RegressionTrainer
    return RegressionTrainer


def _copedit_stage(stage: int) -> Callable[[], type]:
    def load() -> type:
        if stage == 1:
            from trainers.copedit.stage1 import CoPeVAETrainer
            return CoPeVAETrainer
        from trainers.copedit.stage2 import MDiT3DTrainer
        return MDiT3DTrainer
    return load


# CoPeDiT's options (trainers.copedit.COPEDIT_ABLATIONS): only Stage II changes, Stage I is the plain method's.
COPEDIT_OPTIONS = ("none", "mask", "per_count", "mask-per_count")


# The CodeBrain ablation switches (paper Tables 3 and 5, Fig. 6) and what each changes; the networks read them
# as configuration fields (trainers.stage1.ABLATION_SWITCHES), so every variant runs the same code.
CODEBRAIN_ABLATIONS: dict[str, str] = {
    "none": "the paper's method (FSQ codes, grading Stage II, PSNR loss, F_c)",
    "no_fc": "decode from the codes only, without F_c",
    "cls": "Stage II classifies each FSQ level (cross-entropy) instead of grading it",
    "l1": "L1 instead of the PSNR reconstruction loss in Stage I",
    "vq": "a learned VQ codebook (plans key vq_codebook_size, default 1024) instead of FSQ, and Stage II "
          "classifies the codebook index",
    "continuous": "no quantisation (the tanh-bounded posterior output is the code), and Stage II regresses it (L1)",
}

# Code layouts: the same networks, losses and loop configured differently (CodeBrainConfig.variant).
CODEBRAIN_VARIANTS: dict[str, str] = {
    "cvpr": "the CVPR 2026 method: one full-stack code from all sequences, F_c from the masked stack",
    "v1": "the arXiv v1 method: one FSQ code per sequence (d = 7, L = 5); Stage I rebuilds a random anchor sequence "
          "from its own code and F_c of another random sequence; Stage II predicts all sequences' codes",
}
CODE_DIM_LEVELS = 5  # FSQ levels of every channel when the code dimension is set (v1 paper: L = 5 for all d)
V1_CODE_DIM = 7  # the v1 paper's d
MAX_CODE_DIM = 16

METHODS: dict[str, MethodSpec] = {
    "codebrain": MethodSpec("CodeBrain", {1: _codebrain_stage(1), 2: _codebrain_stage(2)},
                            ablations=tuple(CODEBRAIN_ABLATIONS), shared_stages={"cls": (1,)}),
    "regression": MethodSpec("Regression", {1: _regression_stage}),
    "copedit": MethodSpec("CoPeDiT", {1: _copedit_stage(1), 2: _copedit_stage(2)}, ablations=COPEDIT_OPTIONS,
                          shared_stages={name: (1,) for name in COPEDIT_OPTIONS if name != "none"},
                          configurations=("3d_copedit", "3d_copedit_cpu")),
}


def register_method(name: str, spec: MethodSpec) -> None:
    """Add a method to the registry (its name must be new)."""
    if name in METHODS:
        raise ValueError(f"training method {name!r} is already registered")
    METHODS[name] = spec


def get_method(name: str) -> MethodSpec:
    """A registered method; the error lists the known names."""
    if name not in METHODS:
        raise KeyError(f"unknown training method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def default_configuration(device: str = "auto", method: str = "codebrain") -> str:
    """The method's paper configuration (``2d``; CoPeDiT ``3d_copedit``) when a GPU will be used, else its CPU one."""
    gpu, cpu = get_method(method).configurations
    return gpu if device != "cpu" and torch.cuda.is_available() else cpu


def check_loss_weights(weights: Sequence[float | str], shown: str | None = None) -> tuple[float, float]:
    """``(lambda_m, lambda_a)`` as floats; ValueError unless two finite non-negative numbers, not both 0."""
    try:
        pair = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(math.isfinite(w) and w >= 0 for w in pair) or not any(pair):
        given = shown if shown is not None else weights
        raise ValueError(f"loss weights must be two non-negative numbers 'lambda_m,lambda_a' (missing, available), "
                         f"not both 0, e.g. '20,5' (the paper) or '1,1'; got {given!r}")
    return pair  # type: ignore[return-value]  (checked to have two entries)


def parse_loss_weights(text: str) -> tuple[float, float]:
    """``'20,5'`` -> ``(lambda_m, lambda_a)`` = (missing, available) reconstruction weights; ValueError if malformed."""
    return check_loss_weights(str(text).split(","), shown=str(text))


def plans_loss_weights(configuration: dict[str, Any]) -> tuple[float, float]:
    """``(lambda_missing, lambda_available)`` of a plans configuration."""
    loss = configuration["optimisation"]["loss"]
    return float(loss["lambda_missing"]), float(loss["lambda_available"])


def resolve_loss_weights(loss_weights: Sequence[float] | str | None, configuration: dict[str, Any]
                         ) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """``(weights used, override)``: the requested ``(lambda_m, lambda_a)`` (default: the plans'), and the same pair
    when it differs from the plans' (it then names the results folder), else None."""
    planned = plans_loss_weights(configuration)
    if loss_weights is None:
        return planned, None
    weights = parse_loss_weights(loss_weights) if isinstance(loss_weights, str) else check_loss_weights(loss_weights)
    return weights, (None if weights == planned else weights)


def check_variant(variant: str = "cvpr", code_dim: int | None = None) -> tuple[str, int | None]:
    """``(variant, code_dim)`` checked, with ``code_dim`` None when it is the variant's default (v1: 7)."""
    if variant not in CODEBRAIN_VARIANTS:
        raise ValueError(f"variant must be one of {tuple(CODEBRAIN_VARIANTS)}, got {variant!r}")
    if code_dim is not None:
        if isinstance(code_dim, bool) or not isinstance(code_dim, int) or not 1 <= code_dim <= MAX_CODE_DIM:
            raise ValueError(f"code dimension must be an integer in 1..{MAX_CODE_DIM} (the v1 paper's Fig. 6 "
                             f"uses 4..7), got {code_dim!r}")
        if variant == "v1" and code_dim == V1_CODE_DIM:
            code_dim = None
    return variant, code_dim


def code_levels(variant: str, code_dim: int | None, planned: Sequence[int]) -> tuple[int, ...]:
    """FSQ levels of one code: ``code_dim`` channels of 5 levels; else v1's 7 x 5; else the plans' ``planned``."""
    variant, code_dim = check_variant(variant, code_dim)
    if code_dim is not None:
        return (CODE_DIM_LEVELS,) * code_dim
    if variant == "v1":
        return (CODE_DIM_LEVELS,) * V1_CODE_DIM
    return tuple(int(level) for level in planned)


def variant_name(ablation: str = "none", loss_weights: tuple[float, float] | None = None, *,
                 variant: str = "cvpr", code_dim: int | None = None) -> str:
    """Folder suffix of a variant: ``''``, ``'-v1'``, ``'-d5'``, ``'-v1-d5'``, ``'-vq'``, ``'-lm1-la1'``,
    ``'-v1-d5-vq-lm1-la1'`` (weights = an override of the plans'; ``code_dim`` = the variant's default adds
    nothing)."""
    variant, code_dim = check_variant(variant, code_dim)
    suffix = "" if variant == "cvpr" else f"-{variant}"
    if code_dim is not None:
        suffix += f"-d{code_dim}"
    if ablation != "none":
        suffix += f"-{ablation}"
    if loss_weights is not None:
        suffix += f"-lm{loss_weights[0]:g}-la{loss_weights[1]:g}"
    return suffix


def results_folder(dataset_folder: str, method: str, plans_name: str, configuration: str, fold: int,
                   ablation: str = "none", loss_weights: tuple[float, float] | None = None, *,
                   variant: str = "cvpr", code_dim: int | None = None) -> Path:
    """``$codebrain_results/<dataset>/<Method[-variant][-dD][-ablation][-lmM-laA]>__<plans>__<configuration>/fold_F``.

    ``loss_weights`` is an override of the plans' ``(lambda_m, lambda_a)``; None (the plans' pair) adds nothing.
    """
    name = get_method(method).folder_name + variant_name(ablation, loss_weights, variant=variant, code_dim=code_dim)
    return paths.results_root() / dataset_folder / f"{name}__{plans_name}__{configuration}" / f"fold_{fold}"


def _stages(stage: str | int, spec: MethodSpec) -> list[int]:
    if str(stage) == "all":
        return sorted(spec.stages)
    if not str(stage).isdigit() or int(stage) not in spec.stages:
        raise ValueError(f"stage must be 'all' or one of {sorted(spec.stages)}, got {stage!r}")
    return [int(stage)]


def run_training(dataset: str | int, fold: int, configuration: str | None = None, stage: str | int = "all",
                 method: str = "codebrain", ablation: str = "none", iterations: int | None = None,
                 device: str = "auto", continue_training: bool = False, compile: bool = False,
                 num_workers: int | None = None, seed: int = 1337, val_every: int | None = None,
                 loss_weights: tuple[float, float] | str | None = None, variant: str = "cvpr",
                 code_dim: int | None = None, **options: Any) -> dict[int, Path]:
    """Train the requested stage(s) of a method on one fold; returns each trained stage's output folder.

    Args:
        dataset: id, full or short name of a planned and preprocessed dataset.
        fold: index into ``splits_final.json``.
        configuration: plans configuration; default ``2d`` with a GPU, ``2d_cpu`` without.
        stage: ``'all'`` or one stage number.
        method, ablation: registry entry and ablation switch (:data:`CODEBRAIN_ABLATIONS` for CodeBrain).
        loss_weights: ``(lambda_m, lambda_a)`` (or ``'20,5'``) of the reconstruction loss; None = the plans'.
            A pair other than the plans' is part of the results folder name.
        variant: ``'cvpr'`` or ``'v1'`` (:data:`CODEBRAIN_VARIANTS`; CodeBrain only).
        code_dim: FSQ channels d of a code, each with 5 levels (None: the variant's default; CodeBrain only).
        iterations, device, continue_training, compile, num_workers, seed, val_every: see ``codebrain_train``.
        **options: further :class:`trainers.base_trainer.TrainingOptions` fields (batch_size, log_every, ...).
    """
    from planners.experiment_planner import get_configuration
    from planners.plan_and_preprocess import load_plans
    from codebrain_seg.io import read_json, write_json
    from trainers.base_trainer import TrainingOptions, distributed_context

    spec = get_method(method)
    if ablation not in spec.ablations:
        raise ValueError(f"ablation must be one of {spec.ablations} for {method}, got {ablation!r}")
    variant, code_dim = check_variant(variant, code_dim)
    if method != "codebrain" and (variant != "cvpr" or code_dim is not None):
        raise ValueError(f"--variant and --code-dim configure CodeBrain's codes; the {method!r} method has none "
                         f"(got variant {variant!r}, code dimension {code_dim!r})")
    stages = _stages(stage, spec)
    preprocessed = paths.preprocessed_dataset_dir(dataset)
    plans = load_plans(preprocessed)
    if configuration is None:
        configuration = default_configuration(device, method)
        logger.info("no configuration given: using %r (%s)", configuration,
                    "a CUDA GPU is available" if configuration == spec.configurations[0] else "no GPU will be used")
    config = get_configuration(plans, configuration)
    splits_path = preprocessed / "splits_final.json"
    if not splits_path.is_file():
        raise FileNotFoundError(f"{splits_path} is missing: run codebrain_plan_and_preprocess -d {dataset}")
    splits = read_json(splits_path)
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise ValueError(f"fold must be an integer in 0..{len(splits) - 1} for {preprocessed.name}, got {fold!r}")
    data_folder = preprocessed / config["data_identifier"]
    if not data_folder.is_dir():
        raise FileNotFoundError(f"{data_folder} is missing: run codebrain_plan_and_preprocess -d {dataset} "
                                f"-c {configuration}")
    weights, override = resolve_loss_weights(loss_weights, config)
    if variant == "v1" and override is not None:
        raise ValueError(f"--loss-weights {override[0]:g},{override[1]:g} does not apply to the v1 variant: its "
                         "Stage I rebuilds one anchor sequence (no available/missing split), weighted by the plans' "
                         "lambda_missing; use it with --variant cvpr")
    named = {"variant": variant, "code_dim": code_dim}
    fold_dir = results_folder(preprocessed.name, method, plans["plans_name"], configuration, fold, ablation, override,
                              **named)
    shared_dir = results_folder(preprocessed.name, method, plans["plans_name"], configuration, fold,
                                loss_weights=override, **named)
    stage_dirs = {k: (shared_dir if k in spec.shared_stages.get(ablation, ()) else fold_dir) / f"stage{k}"
                  for k in spec.stages}
    identity = {"dataset": preprocessed.name, "fold": fold, "method": method, "ablation": ablation,
                "loss_weights": {"lambda_missing": weights[0], "lambda_available": weights[1]}, **named}
    extra = dict(options.pop("extra", None) or {})
    extra.setdefault("stage_dirs", {str(k): str(v) for k, v in stage_dirs.items()})
    done: dict[int, Path] = {}
    try:
        for number in stages:
            shared = number in spec.shared_stages.get(ablation, ())
            if shared and _finished(stage_dirs[number]):
                logger.info("stage %d is shared with the plain method and already finished in %s; reusing it",
                            number, stage_dirs[number])
                continue
            stage_ablation = "none" if shared else ablation
            run_options = TrainingOptions(iterations=iterations, device=device, seed=seed, num_workers=num_workers,
                                          val_every=val_every, compile=compile, continue_training=continue_training,
                                          ablation=stage_ablation, loss_weights=weights, variant=variant,
                                          code_dim=code_dim, extra=extra, **options)
            trainer = spec.stages[number]()(plans, configuration, data_folder, splits[fold], stage_dirs[number],
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


def _finished(stage_dir: Path) -> bool:
    return (stage_dir / "checkpoint_final.pth").is_file()
