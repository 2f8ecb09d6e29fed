"""The run options of a training stage that are not in the plans."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from codebrain_seg.errors import InputError

# Options that must be positive when given (None = the plans' or the machine's value): a 0 must not silently
# mean "the default" (``--iterations 0`` once started a 2,600-iteration run).
POSITIVE = ("iterations", "batch_size", "val_every", "save_every", "log_every", "num_threads",
            "max_val_slices_per_case")


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
    continue_training: bool = False  # resuming is the default now; kept for callers that still pass it
    overwrite: bool = False  # start over: delete this stage's checkpoints (checkpoint_final.pth included)
    validate_at_start: bool = False
    ablation: str = "none"
    loss_weights: tuple[float, float] | None = None  # (lambda_m, lambda_a); None = the plans'
    variant: str = "cvpr"  # CodeBrain code layout: 'cvpr' (full-stack code) or 'v1' (per-modality codes)
    code_dim: int | None = None  # FSQ channels of a code, 5 levels each; None = the plans' levels (v1: 7 x 5)
    num_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} must be a positive integer, got {value!r} (leave it out for the plans' "
                                 f"or the machine's value)")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise InputError(f"--num-workers must be 0 or more, got {self.num_workers!r}")
