"""Confidence of a CodeBrain imputation from the Stage II ordinal (grading) logits.

For every code cell (8 x 8 pixels) and code channel ``i`` with ``L_i`` levels, Stage II gives ``L_i - 1`` sigmoid
probabilities ``p_t = P(k_i > t)``; the level is decoded by counting ``p_t > 0.5``. The expected number of wrong
threshold decisions is ``u_i = sum_t min(p_t, 1 - p_t)`` (= the expected absolute level error
``E|k_i - k_hat_i|`` when the thresholds are consistent, an upper bound otherwise). Confidence per cell is
``1 - mean_i u_i / ((L_i - 1) / 2)``: 1 when every probability is 0 or 1, 0 when all are 0.5.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from codebrain_seg.errors import InputError

CONFIDENCE_DEFINITION = ("per 8x8 code cell: 1 - mean over the d code channels of sum_t min(p_t, 1 - p_t) / "
                         "((L_i - 1) / 2), p_t = sigmoid of Stage II ordinal logit t (P(level > t)); the sum is the "
                         "expected number of wrong threshold decisions (= expected absolute level error when the "
                         "thresholds are consistent); 1 = certain, 0 = every probability 0.5; bilinearly up-sampled "
                         "to pixels, 0 outside the brain and the field of view")



def ordinal_confidence(logits: Tensor, fsq_levels: Sequence[int], per_channel: bool = False) -> Tensor:
    """Confidence per code cell from Stage II ordinal logits (module docstring, "Confidence").

    Args:
        logits: ``(B, sum(L_i - 1), h, w)`` grading logits.
        fsq_levels: ``L_i`` per code channel.
        per_channel: return the confidence of each code channel ``(B, d, h, w)`` instead of their mean.

    Returns:
        ``(B, h, w)`` (or ``(B, d, h, w)``) float32 in [0, 1]; 1 = every threshold decided with certainty.
    """
    fsq_levels = [int(level) for level in fsq_levels]
    if logits.dim() != 4 or logits.shape[1] != sum(level - 1 for level in fsq_levels):
        raise InputError(f"grading logits must be (B, {sum(level - 1 for level in fsq_levels)}, h, w), "
                         f"got {tuple(logits.shape)}")
    probabilities = torch.sigmoid(logits.float())
    wrong = torch.minimum(probabilities, 1.0 - probabilities)
    spreads = [group.sum(dim=1) / ((level - 1) / 2.0)
               for group, level in zip(torch.split(wrong, [level - 1 for level in fsq_levels], dim=1), fsq_levels)]
    spread = torch.stack(spreads, dim=1)
    return (1.0 - (spread if per_channel else spread.mean(dim=1))).clamp(0.0, 1.0)
