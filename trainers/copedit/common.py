"""What both CoPeDiT stages share: the method's options, its configuration from the plans, optimisers, metrics.

CoPeDiT options (``TrainingOptions.ablation`` of ``method='copedit'``, one results folder each):

* ``none`` — learned completeness prompts, one MDiT3D for every missing pattern (canonical slot order);
* ``mask`` — the paper's main ablation: binary mask codes replace the learned prompts;
* ``per_count`` — the paper's layout: one MDiT3D per missing count, available sequences first;
* ``mask-per_count`` — both.

Only Stage II differs between them, so every option reuses the plain method's Stage I.

**Elements.** The m slots are a brain case's sequences (``3d_volume`` configurations, ``elements='modalities'``)
or the consecutive slabs of a short-axis stack (``3d_cardiac_stack``, ``elements='slices'``). The stages are the
same code for both; only the missing sets differ: random subsets of sequences, or consecutive runs of slabs of a
random length 1..m-1 at a random start (:func:`iteration_missing_masks`, :func:`all_missing_masks`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from codebrain_seg.errors import InputError
from codebrain_seg.metrics import volume_psnr, volume_ssim  # noqa: F401 (the stages' validation metrics)
from codebrain_seg.networks.copedit import CoPeDiTConfig, sample_missing_masks, sample_missing_runs
from codebrain_seg.variants import (  # noqa: F401 (re-exported: the CoPeDiT options of the trainers)
    COPEDIT_ABLATIONS,
    LAYOUT_CHOICES,
    PROMPT_CHOICES,
    ablation_switches,
    copedit_ablation,
)

MASK_STREAM = 3  # random stream of the per-case missing masks (data: 0, CodeBrain's patterns: 1, anchors: 2)
# plans configuration kinds CoPeDiT trains on: brain volumes (slots = sequences), cardiac stacks (slots = slabs)
COPEDIT_KINDS = ("3d_volume", "3d_cardiac_stack")


def copedit_config(configuration: dict[str, Any], ablation: str = "none") -> CoPeDiTConfig:
    """The networks of a CoPeDiT plans configuration (``3d_volume`` or ``3d_cardiac_stack``), with mask-code prompts
    for the mask options."""
    if configuration.get("kind") not in COPEDIT_KINDS:
        raise InputError("CoPeDiT trains on a 3D-volume configuration of the plans (3d_copedit or 3d_copedit_cpu; "
                         "3d_cardiac or 3d_cardiac_cpu for missing slices; codebrain_plan_and_preprocess -c "
                         f"3d_copedit_cpu), got kind {configuration.get('kind')!r}")
    config = CoPeDiTConfig.from_dict(configuration["network"])
    if list(config.stack_shape) != [int(s) for s in configuration["target_size"]]:
        raise InputError(f"network input {list(config.stack_shape)} differs from the configuration's "
                         f"target_size {configuration['target_size']}")
    prompts, layout = ablation_switches(ablation)
    if config.elements == "slices" and layout == "per_count":
        raise InputError("--layout per_count puts the given slots first, which would scramble the slab order of a "
                         "short-axis stack: the cardiac configurations train the shared layout only")
    return config.with_mask_prompts() if prompts == "mask" else config


def iteration_generator(seed: int, rank: int, iteration: int, stream: int) -> torch.Generator:
    """A CPU torch generator that is a pure function of ``(seed, rank, iteration, stream)``."""
    value = np.random.default_rng([int(seed), int(rank), int(iteration), int(stream)]).integers(2 ** 62)
    return torch.Generator().manual_seed(int(value))


def iteration_missing_masks(seed: int, rank: int, iteration: int, batch: int, num_modalities: int,
                            same_count: bool = False, stream: int = MASK_STREAM,
                            elements: str = "modalities") -> Tensor:
    """Per-case missing masks ``(B, m)`` bool of one iteration (a count 1..m-1, then which; pure in the iteration).

    ``same_count`` draws one count for the batch (the one-model-per-count layout trains one model per step), the
    same on every rank, so that all DDP ranks train the same model in a step. ``elements='slices'``: consecutive
    runs of a random length 1..m-1 at a random start (``sample_missing_runs``).
    """
    generator = iteration_generator(seed, rank, iteration, stream)
    if elements == "slices":
        if same_count:
            raise InputError("one missing count per batch is the per-count layout, which slices do not train")
        return sample_missing_runs(batch, num_modalities, generator=generator)
    if not same_count:
        return sample_missing_masks(batch, num_modalities, generator=generator)
    count = int(torch.randint(1, num_modalities, (1,), generator=iteration_generator(seed, 0, iteration, stream + 100)))
    # a random permutation gives every sequence a distinct label 0..m-1: labels below the count are missing
    return torch.rand(batch, num_modalities, generator=generator).argsort(dim=1) < count


def all_missing_masks(num_modalities: int, elements: str = "modalities") -> Tensor:
    """Every pattern with 1..m-1 missing sequences ``(2^m - 2, m)`` bool, in the order of the CodeBrain patterns;
    ``elements='slices'``: every consecutive run of 1..m-1 slabs (by length, then start)."""
    if elements == "slices":
        return torch.tensor([[start <= k < start + length for k in range(num_modalities)]
                             for length in range(1, num_modalities) for start in range(num_modalities - length + 1)],
                            dtype=torch.bool)
    rows = []
    for code in range(1, 2 ** num_modalities - 1):
        available = [bool(code >> (num_modalities - 1 - c) & 1) for c in range(num_modalities)]
        rows.append([not flag for flag in available])
    return torch.tensor(rows, dtype=torch.bool)


def warmup_cosine_lambda(total: int, warmup: int, lr: float, eta_min: float) -> Callable[[int], float]:
    """LR multiplier per iteration: linear warmup over ``warmup`` iterations, then cosine to ``eta_min / lr``."""
    warmup = max(0, min(int(warmup), max(total - 1, 0)))
    floor = float(eta_min) / float(lr)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def add_warmup_cosine_optimizer(trainer: Any, name: str, spec: dict[str, Any]) -> None:
    """Adam (or AdamW) for ``trainer.networks[name]`` with the warmup-cosine schedule of a plans entry."""
    parameters = [p for p in trainer.networks[name].parameters() if p.requires_grad]
    kind = torch.optim.AdamW if spec.get("name", "Adam") == "AdamW" else torch.optim.Adam
    optimizer = kind(parameters, lr=float(spec["lr"]), betas=tuple(spec["betas"]),
                     weight_decay=float(spec["weight_decay"]))
    trainer.optimizers[name] = optimizer
    trainer.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine_lambda(trainer.total_iterations, spec.get("warmup_iterations", 0),
                                        float(spec["lr"]), float(spec["eta_min"])))


def check_copedit_options(trainer: Any) -> None:
    """Refuse options that do not apply to CoPeDiT (before anything is written)."""
    copedit_config(trainer.configuration, trainer.options.ablation)
    weights = trainer.options.loss_weights
    if weights is not None and tuple(float(w) for w in weights) != (1.0, 1.0):
        raise InputError(f"--loss-weights {weights} does not apply to CoPeDiT: CoPeVAE reconstructs every sequence "
                         "with the same L1 weight")
