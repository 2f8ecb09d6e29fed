"""The run options of a training stage that are not in the plans."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainingOptions:
    """Run options that are not in the plans (``None`` = derived from the plans or the machine)."""

    iterations: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    seed: int = 1337
    num_workers: int | None = None
    val_every: int | None = None
    save_every: int | None = None
    log_every: int = 10
    max_val_slices_per_case: int = 32
    compile: bool = False
    continue_training: bool = False
    validate_at_start: bool = False
    ablation: str = "none"
    loss_weights: tuple[float, float] | None = None  # (lambda_m, lambda_a); None = the plans'
    variant: str = "cvpr"  # CodeBrain code layout: 'cvpr' (full-stack code) or 'v1' (per-modality codes)
    code_dim: int | None = None  # FSQ channels of a code, 5 levels each; None = the plans' levels (v1: 7 x 5)
    num_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
