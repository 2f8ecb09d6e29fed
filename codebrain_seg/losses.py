"""CodeBrain losses: per-modality PSNR reconstruction loss, LSGAN terms, and the Stage-II code-prediction losses.

Stage I (paper Eq. 3): ``lambda_a * mean(l_c over available) + lambda_m * mean(l_c over missing)`` with
``l_c = 10 log10(MSE_c + 1e-8)`` (a differentiable negative PSNR for data range 1; NAFNet, Chen et al. 2022),
plus an LSGAN term whose fake target is the availability mask per channel.
Stage II (paper Eqs. 5-6): each code level ``k`` of a channel with ``L`` levels becomes ``L - 1`` ordinal
targets ``[k > t for t in 0 .. L-2]`` trained with binary cross-entropy; decoding counts positive logits.
The classification ablation uses cross-entropy over the ``L`` levels instead (and the VQ ablation over the
codebook entries, one "channel" of ``K`` classes). The continuous-code ablation regresses the code with L1.
The VQ ablation adds the VQ-VAE codebook + commitment loss to Stage I (:func:`vector_quantization_loss`).

All per-channel work is vectorised; ``available`` is one boolean pattern ``(C,)`` for the whole batch
(``True`` = modality given to the network, ``False`` = missing, zero-filled).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from codebrain_seg.errors import InputError

PSNR_SCALE = 10.0 / math.log(10.0)
PSNR_EPS = 1e-8
RECONSTRUCTION_KINDS = ("psnr", "l1")
_PAD_LOGIT = -1e9  # fills the unused classes of channels with fewer levels; never wins a softmax/argmax


def _reduce_all_but_channels(values: Tensor) -> Tensor:
    """Mean over every dim except dim 1: ``(B, C, *spatial) -> (C,)``."""
    return values.mean(dim=[dim for dim in range(values.dim()) if dim != 1])


def _check_pair(prediction: Tensor, target: Tensor) -> None:
    if prediction.shape != target.shape or prediction.dim() < 2:
        raise InputError(
            f"prediction and target must have the same (B, C, ...) shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )


def _availability(available: Tensor | Sequence[bool], num_channels: int, device: torch.device) -> Tensor:
    """Availability pattern as a bool tensor ``(C,)`` on ``device``; raises when its length is not C."""
    mask = torch.as_tensor(available, device=device)
    if mask.dtype != torch.bool:
        mask = mask != 0
    if mask.shape != (num_channels,):
        raise InputError(f"available must be one pattern of shape ({num_channels},), got shape {tuple(mask.shape)}")
    return mask


def psnr_loss_per_channel(prediction: Tensor, target: Tensor, eps: float = PSNR_EPS) -> Tensor:
    """Per-modality ``10 log10(mean_{b,h,w}(pred - target)^2 + eps)`` in fp32; lower is better.

    Args:
        prediction: ``(B, C, H, W)`` raw (unclamped) reconstruction.
        target: ``(B, C, H, W)`` ground truth in [0, 1].

    Returns:
        ``(C,)`` losses; the MSE is pooled over the batch before the log.
    """
    _check_pair(prediction, target)
    mse = _reduce_all_but_channels((prediction.float() - target.float()).square())
    return PSNR_SCALE * torch.log(mse + eps)


def l1_loss_per_channel(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-modality mean absolute error ``(C,)`` in fp32 (the 'l1' ablation of the PSNR loss)."""
    _check_pair(prediction, target)
    return _reduce_all_but_channels((prediction.float() - target.float()).abs())


def reconstruction_loss_per_channel(prediction: Tensor, target: Tensor, kind: str = "psnr") -> Tensor:
    """Per-modality reconstruction loss ``(C,)``: PSNR loss (paper) or L1 (ablation), before the lambda weights."""
    if kind == "psnr":
        return psnr_loss_per_channel(prediction, target)
    if kind == "l1":
        return l1_loss_per_channel(prediction, target)
    raise InputError(f"reconstruction loss kind must be one of {RECONSTRUCTION_KINDS}, got {kind!r}")


def weight_available_missing(
    per_channel: Tensor,
    available: Tensor | Sequence[bool],
    weight_available: float = 5.0,
    weight_missing: float = 20.0,
) -> Tensor:
    """Combine per-modality losses ``(C,)`` as ``w_a * mean(available) + w_m * mean(missing)``.

    An empty group (e.g. nothing missing) contributes 0.
    """
    mask = _availability(available, per_channel.shape[0], per_channel.device)
    given = mask.to(per_channel.dtype)
    missing = 1.0 - given
    mean_available = (per_channel * given).sum() / given.sum().clamp_min(1.0)
    mean_missing = (per_channel * missing).sum() / missing.sum().clamp_min(1.0)
    return weight_available * mean_available + weight_missing * mean_missing


def reconstruction_loss(
    prediction: Tensor,
    target: Tensor,
    available: Tensor | Sequence[bool],
    kind: str = "psnr",
    weight_available: float = 5.0,
    weight_missing: float = 20.0,
) -> Tensor:
    """Stage-I reconstruction loss (scalar): weighted per-modality PSNR (paper) or L1 (ablation) loss.

    Args:
        prediction: ``(B, C, H, W)`` reconstruction of all modalities.
        target: ``(B, C, H, W)`` complete ground-truth stack.
        available: ``(C,)`` bool pattern shared by the batch (True = given to the network).
        kind: ``'psnr'`` or ``'l1'``.
        weight_available: lambda_a (5 in the reference code).
        weight_missing: lambda_m (20 in the reference code).

    Returns:
        Scalar loss (float32).
    """
    per_channel = reconstruction_loss_per_channel(prediction, target, kind)
    return weight_available_missing(per_channel, available, weight_available, weight_missing)


def discriminator_loss(real_scores: Tensor, fake_scores: Tensor, available: Tensor | Sequence[bool]) -> Tensor:
    """LSGAN discriminator loss ``0.5 * [MSE(D(x, x), 1) + MSE(D(x_tilde, x), m)]``.

    Args:
        real_scores: ``(B, C, h, w)`` scores of the real stack.
        fake_scores: ``(B, C, h, w)`` scores of the pasted-back reconstruction (detached from G).
        available: ``(C,)`` pattern; available channels of the fake are copies of the input, so their target is 1.

    Returns:
        Scalar loss (float32).
    """
    if real_scores.shape != fake_scores.shape:
        raise InputError(
            f"real and fake scores differ in shape: {tuple(real_scores.shape)} vs {tuple(fake_scores.shape)}"
        )
    mask = _availability(available, fake_scores.shape[1], fake_scores.device).float()
    fake_target = mask.view([1, -1] + [1] * (fake_scores.dim() - 2)).expand_as(fake_scores)
    real_term = F.mse_loss(real_scores.float(), torch.ones_like(real_scores, dtype=torch.float32))
    fake_term = F.mse_loss(fake_scores.float(), fake_target)
    return 0.5 * (real_term + fake_term)


def generator_adversarial_loss(fake_scores: Tensor) -> Tensor:
    """LSGAN generator term ``MSE(D(x_tilde, x), 1)`` (scalar, float32); weight 0.1 in the reference."""
    return F.mse_loss(fake_scores.float(), torch.ones_like(fake_scores, dtype=torch.float32))


# ---- Stage II: code prediction -------------------------------------------------------------------------


def _as_level_list(num_levels: int | Sequence[int], num_channels: int) -> list[int]:
    levels = [int(num_levels)] * num_channels if isinstance(num_levels, int) else [int(n) for n in num_levels]
    if len(levels) != num_channels or any(level < 2 for level in levels):
        raise InputError(f"need {num_channels} level counts >= 2, got {num_levels}")
    return levels


def _ordinal_layout(fsq_levels: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """For the ``sum(L_i - 1)`` ordinal outputs: the code channel each belongs to and its threshold ``t``."""
    widths = torch.tensor([level - 1 for level in fsq_levels], device=device)
    channel_of = torch.repeat_interleave(torch.arange(len(fsq_levels), device=device), widths)
    group_start = torch.cumsum(widths, dim=0) - widths
    threshold = torch.arange(int(widths.sum()), device=device) - group_start[channel_of]
    return channel_of, threshold


def _check_logits(logits: Tensor, expected: int, what: str) -> None:
    if logits.dim() < 2 or logits.shape[1] != expected:
        raise InputError(f"{what} logits must have {expected} channels in dim 1, got shape {tuple(logits.shape)}")


def _broadcast_channels(values: Tensor, like: Tensor) -> Tensor:
    return values.view([1, -1] + [1] * (like.dim() - 2))


def levels_to_ordinal_targets(levels: Tensor, num_levels: int | Sequence[int]) -> Tensor:
    """Ordinal (grading) targets: output ``t`` of channel ``i`` is 1 if ``k_i > t``, for ``t = 0 .. L_i - 2``.

    Args:
        levels: integer levels ``(B, d, h, w)``.
        num_levels: ``L`` shared by all channels, or one ``L_i`` per channel.

    Returns:
        Float targets ``(B, sum(L_i - 1), h, w)``, channel groups in code-channel order.
    """
    fsq_levels = _as_level_list(num_levels, levels.shape[1])
    channel_of, threshold = _ordinal_layout(fsq_levels, levels.device)
    expanded = levels.long().index_select(1, channel_of)
    return (expanded > _broadcast_channels(threshold, expanded)).float()


def grading_loss(logits: Tensor, levels: Tensor, fsq_levels: Sequence[int]) -> Tensor:
    """Ordinal BCE: mean over the d code channels of each channel's mean BCE-with-logits.

    Args:
        logits: ``(B, sum(L_i - 1), h, w)`` prior-encoder output.
        levels: target integer levels ``(B, d, h, w)`` from the Stage-I posterior codes.
        fsq_levels: ``L_i`` per channel.

    Returns:
        Scalar loss (float32).
    """
    fsq_levels = _as_level_list(fsq_levels, levels.shape[1])
    _check_logits(logits, sum(level - 1 for level in fsq_levels), "grading")
    targets = levels_to_ordinal_targets(levels, fsq_levels)
    per_output = _reduce_all_but_channels(
        F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    )
    channel_of, _ = _ordinal_layout(fsq_levels, logits.device)
    widths = torch.tensor([level - 1 for level in fsq_levels], device=logits.device, dtype=torch.float32)
    # mean within each channel's group, then mean over channels, as one weighted sum
    weights = 1.0 / (widths[channel_of] * len(fsq_levels))
    return (per_output * weights).sum()


def decode_grading(logits: Tensor, fsq_levels: Sequence[int], expected: bool = False) -> Tensor:
    """Levels ``(B, d, h, w)`` of ordinal logits ``(B, sum(L_i - 1), h, w)``.

    Default (the reference's decode): int64, the number of positive logits in each channel's group. With
    ``expected``: float32, the expected level ``sum_t sigmoid(logit_t)`` (each output estimates P(level > t)) —
    between grid levels where the head is unsure, which lowers the decoder's squared error (held-out PSNR in
    ``docs/results/real_data.md``).
    """
    fsq_levels = [int(level) for level in fsq_levels]
    _check_logits(logits, sum(level - 1 for level in fsq_levels), "grading")
    channel_of, _ = _ordinal_layout(fsq_levels, logits.device)
    shape = list(logits.shape)
    shape[1] = len(fsq_levels)
    if expected:
        totals = torch.zeros(shape, dtype=torch.float32, device=logits.device)
        return totals.index_add_(1, channel_of, torch.sigmoid(logits.float()))
    counts = torch.zeros(shape, dtype=torch.long, device=logits.device)
    return counts.index_add_(1, channel_of, (logits > 0).long())


def _padded_class_logits(logits: Tensor, fsq_levels: Sequence[int]) -> Tensor:
    """``(B, sum(L_i), h, w)`` -> ``(B, max L, d, h, w)``; classes a channel does not have get a -1e9 logit."""
    num_channels, most = len(fsq_levels), max(fsq_levels)
    counts = torch.tensor(fsq_levels, device=logits.device)
    starts = torch.cumsum(counts, dim=0) - counts
    classes = torch.arange(most, device=logits.device)
    source = starts[:, None] + classes[None, :]  # (d, max L) channel index into the logits
    source = torch.where(classes[None, :] < counts[:, None], source, torch.full_like(source, logits.shape[1]))
    pad_shape = list(logits.shape)
    pad_shape[1] = 1
    padded = torch.cat([logits.float(), logits.new_full(pad_shape, _PAD_LOGIT, dtype=torch.float32)], dim=1)
    gathered = padded.index_select(1, source.flatten())
    return gathered.view(logits.shape[0], num_channels, most, *logits.shape[2:]).transpose(1, 2)


def classification_loss(logits: Tensor, levels: Tensor, fsq_levels: Sequence[int]) -> Tensor:
    """Classification ablation: mean over the d channels of each channel's mean cross-entropy over L_i classes.

    Args:
        logits: ``(B, sum(L_i), h, w)``.
        levels: target integer levels ``(B, d, h, w)``.
        fsq_levels: ``L_i`` per channel.

    Returns:
        Scalar loss (float32).
    """
    fsq_levels = _as_level_list(fsq_levels, levels.shape[1])
    _check_logits(logits, sum(fsq_levels), "classification")
    per_position = F.cross_entropy(_padded_class_logits(logits, fsq_levels), levels.long(), reduction="none")
    return _reduce_all_but_channels(per_position).mean()


def decode_classification(logits: Tensor, fsq_levels: Sequence[int], expected: bool = False) -> Tensor:
    """Levels ``(B, d, h, w)`` of class logits ``(B, sum(L_i), h, w)``: int64 argmax over each channel's L_i
    classes, or with ``expected`` float32 ``sum_k softmax_k * k`` (only meaningful where the classes are ordered
    levels, i.e. FSQ, not VQ codebook indices)."""
    fsq_levels = [int(level) for level in fsq_levels]
    _check_logits(logits, sum(fsq_levels), "classification")
    padded = _padded_class_logits(logits, fsq_levels)
    if expected:
        classes = torch.arange(padded.shape[1], device=logits.device, dtype=torch.float32)
        return (padded.softmax(dim=1) * classes.view(1, -1, *[1] * (padded.dim() - 2))).sum(dim=1)
    return padded.argmax(dim=1)


# ---- ablations: VQ codebook and continuous codes ---------------------------------------------------------


def vector_quantization_loss(encoded: Tensor, quantized: Tensor, commitment_weight: float = 0.25) -> Tensor:
    """VQ-VAE auxiliary loss ``MSE(q, sg[z]) + beta * MSE(z, sg[q])`` (van den Oord et al., NeurIPS 2017).

    The first (codebook) term moves the selected codebook entries towards the encoder outputs; the second
    (commitment) term keeps the encoder outputs close to their entries. The straight-through estimator gives
    the codebook no gradient from the reconstruction, so without the first term it would never be trained.

    Args:
        encoded: encoder outputs ``z`` ``(B, d, *spatial)`` (before quantisation).
        quantized: their nearest codebook entries ``q`` ``(B, d, *spatial)``, differentiable w.r.t. the codebook.
        commitment_weight: beta (0.25 in VQ-VAE).

    Returns:
        Scalar loss (float32).
    """
    _check_pair(quantized, encoded)
    encoded, quantized = encoded.float(), quantized.float()
    codebook_term = F.mse_loss(quantized, encoded.detach())
    commitment_term = F.mse_loss(encoded, quantized.detach())
    return codebook_term + commitment_weight * commitment_term


def code_regression_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Continuous-code ablation of Stage II: mean absolute error between predicted and posterior codes.

    L1 is the continuous counterpart of the grading loss: for consistent ordinal outputs the number of wrong
    threshold decisions is ``|k_hat - k|``, an absolute error in level units.

    Args:
        prediction: bounded predicted codes ``(B, d, h, w)`` (tanh of the prior encoder's output).
        target: posterior codes ``(B, d, h, w)`` in (-1, 1).

    Returns:
        Scalar loss (float32).
    """
    _check_pair(prediction, target)
    return (prediction.float() - target.float()).abs().mean()
