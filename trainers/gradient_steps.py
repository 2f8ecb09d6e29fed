"""One optimiser step of a trainer's network that never lets non-finite gradients reach the weights.

fp16 has a gradient scaler that skips an overflowing step; bf16 and fp32 have none, so without this a single NaN
backward pass (seen with CoPeVAE in CPU bf16 on an AMX CPU) poisons every weight and the run trains on, logging
``nan``. A non-finite step is skipped and counted; ``MAX_NONFINITE_STEPS`` in a row mean the run has diverged.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor

from codebrain_seg.errors import TrainingDivergedError

logger = logging.getLogger(__name__)

# Consecutive non-finite steps tolerated before a run is stopped as diverged: a rare bf16 overflow in a backward
# pass is skipped as fp16's gradient scaler would skip it; a run that keeps producing them has diverged.
MAX_NONFINITE_STEPS = 20


def guarded_step(trainer: Any, name: str, loss: Tensor, max_norm: float | None = None) -> float:
    """Backward ``loss``, optionally clip the gradient norm to ``max_norm``, step ``trainer.optimizers[name]``.

    ``trainer`` provides ``optimizers``, ``scaler``, ``nonfinite_steps`` (name -> consecutive skips),
    ``skipped_steps``, ``iteration``, ``precision`` and ``output_dir`` (a :class:`trainers.base_trainer.BaseTrainer`).
    Returns the gradient norm before clipping (inf or nan for a skipped step).
    """
    optimizer = trainer.optimizers[name]
    optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    trainer.scaler.unscale_(optimizer)
    parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not parameters:
        return 0.0
    norm = float(torch.nn.utils.clip_grad_norm_(parameters, math.inf if max_norm is None else max_norm))
    if trainer.scaler.is_enabled() or math.isfinite(norm):
        trainer.scaler.step(optimizer)  # fp16: the scaler skips an overflowing step and lowers its scale itself
        trainer.nonfinite_steps[name] = 0
        return norm
    optimizer.zero_grad(set_to_none=True)
    trainer.nonfinite_steps[name] = trainer.nonfinite_steps.get(name, 0) + 1
    trainer.skipped_steps += 1
    logger.warning("iteration %d: non-finite gradients in %s (%s): step skipped (%d in a row)", trainer.iteration,
                   name, trainer.precision, trainer.nonfinite_steps[name])
    if trainer.nonfinite_steps[name] >= MAX_NONFINITE_STEPS:
        raise TrainingDivergedError(
            f"{trainer.output_dir}: training diverged at iteration {trainer.iteration}: {MAX_NONFINITE_STEPS} steps "
            f"in a row gave non-finite gradients in {name} ({trainer.precision}); checkpoint_latest.pth holds the "
            "last good state: rerun with --continue --precision fp32, or lower the learning rate in the plans")
    return norm
