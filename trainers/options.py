"""The run options of a training stage that are not in the plans."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import torch

from codebrain_seg.device import amx_cpu
from codebrain_seg.errors import InputError

# Options that must be positive when given (None = the plans' or the machine's value): a 0 must not silently
# mean "the default" (``--iterations 0`` once started a 2,600-iteration run).
# ``torch.compile`` costs minutes of compilation up front (about 4 for the paper network on a 2-core CPU, 7 on one
# AVX2 thread) and does not pay everywhere (benchmarks/bench_training.py; docs/benchmarks.md), paper network's
# Stage I step, bf16 where native: on an Intel Xeon with AMX 1.4x faster; on an AMD EPYC with AVX512-BF16 (no AMX)
# 0.91-0.98x once the NAFBlocks kept a bf16 residual stream (eager bf16 no longer has elementwise work in fp32 for
# the compiler to fuse); on an AVX2-only CPU in fp32 0.74x. So "auto" compiles runs of at least this many
# iterations on CUDA and on AMX CPUs, and leaves short runs (tests, the demo, CPU budgets) and other CPUs eager.
COMPILE_MIN_ITERATIONS = 10_000
# How CodeBrain's Stage II prior encoder starts: from the trained Stage I common encoder E_c (same architecture and
# the same input, the zero-filled stack; only the code head is new), or from random weights as the reference does.
# On the real cases' 45-minute budget run the warm start raised held-out T1Gd (docs/results/real_data.md).
PRIOR_INITS = ("common_encoder", "random")
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
    compile: bool | None = None  # None = auto: compile runs long enough to repay it (trainers.base_trainer)
    continue_training: bool = False  # resuming is the default now; kept for callers that still pass it
    overwrite: bool = False  # start over: delete this stage's checkpoints (checkpoint_final.pth included)
    validate_at_start: bool = False
    ablation: str = "none"
    loss_weights: tuple[float, float] | None = None  # (lambda_m, lambda_a); None = the plans'
    variant: str = "cvpr"  # CodeBrain code layout: 'cvpr' (full-stack code) or 'v1' (per-modality codes)
    code_dim: int | None = None  # FSQ channels of a code, 5 levels each; None = the plans' levels (v1: 7 x 5)
    num_threads: int | None = None
    prior_init: str = "common_encoder"  # CodeBrain Stage II: E_prior starts from Stage I's E_c, or 'random'
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} must be a positive integer, got {value!r} (leave it out for the plans' "
                                 f"or the machine's value)")
        if self.prior_init not in PRIOR_INITS:
            raise InputError(f"--prior-init must be one of {', '.join(PRIOR_INITS)}, got {self.prior_init!r}")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise InputError(f"--num-workers must be 0 or more, got {self.num_workers!r}")


def choose_compile(requested: bool | None, iterations: int, device: torch.device) -> bool:
    """Whether a stage runs under ``torch.compile``: as requested, or (``None`` = auto) for runs of at least
    :data:`COMPILE_MIN_ITERATIONS` iterations where it was measured to pay: CUDA, or a CPU with AMX and a C++
    compiler for inductor's kernels."""
    if requested is not None:
        return bool(requested)
    if device.type == "cuda":
        pays = True
    else:
        pays = amx_cpu() and (shutil.which("g++") is not None or shutil.which("c++") is not None)
    return iterations >= COMPILE_MIN_ITERATIONS and pays


def default_cpu_threads(local_world_size: int = 1) -> int:
    """Torch threads of a CPU training run without ``--num-threads``: ``OMP_NUM_THREADS``, else this machine's cores
    split between the ranks sharing it (instead of oversubscribing them)."""
    return int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, (os.cpu_count() or 1) // local_world_size)
