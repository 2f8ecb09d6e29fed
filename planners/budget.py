"""Analytic compute and memory estimates of the CodeBrain networks, used by the planner to size them.

The estimates count multiply-accumulates of the convolutions of the NAFNet encoders and decoder (the paper's
reference architecture, as in the CodeBrain reference implementation) and the activations a training
step keeps for backward. They are deliberately simple: they rank configurations and are calibrated against
the reference (batch 8 of 256x256 slices fits a 24 GB GPU), not exact.
"""
from __future__ import annotations

from dataclasses import dataclass

DOWNSAMPLINGS = 3
# Floats stored for backward per pixel and per channel of a NAFBlock (its norm, expanded convs, gate, attention
# and residual outputs): about 14 tensors of the block's width.
_STORED_PER_BLOCK_CHANNEL = 14
# Forward + backward ~ 3x the forward multiply-accumulates, 2 FLOPs each.
_TRAINING_FLOPS_PER_MAC = 6


@dataclass(frozen=True)
class NetworkSize:
    """Widths and depth of the three Stage-I networks (the prior encoder mirrors the common encoder)."""

    posterior_width: int
    common_width: int
    decoder_width: int
    depth: int

    def as_dict(self) -> dict[str, int]:
        """Plain dict for the plans file."""
        return {"posterior_width": self.posterior_width, "common_width": self.common_width,
                "decoder_width": self.decoder_width, "depth": self.depth}


PAPER_SIZE = NetworkSize(posterior_width=32, common_width=96, decoder_width=96, depth=6)


def _block_macs(width: int) -> int:
    # 1x1 c->2c, depthwise 3x3 on 2c, 1x1 c->c, then the FFN 1x1 c->2c and 1x1 c->c.
    return 2 * width * width + 18 * width + width * width + 2 * width * width + width * width


def _encoder_levels(width: int, depth: int) -> list[tuple[int, int, int]]:
    """(width, blocks, pixel divisor) per resolution level of an encoder."""
    levels = [(width * 2 ** level, 1, 4 ** level) for level in range(DOWNSAMPLINGS)]
    levels.append((width * 2 ** DOWNSAMPLINGS, depth, 4 ** DOWNSAMPLINGS))
    return levels


def _decoder_levels(width: int, depth: int) -> list[tuple[int, int, int]]:
    levels = [(width * 16, depth, 4 ** DOWNSAMPLINGS)]
    levels += [(width * 2 ** level, 1, 4 ** level) for level in reversed(range(DOWNSAMPLINGS))]
    return levels


def encoder_macs_per_pixel(width: int, depth: int, in_channels: int) -> float:
    """Forward multiply-accumulates of one encoder, per input pixel."""
    macs = 9.0 * in_channels * width
    for index, (level_width, blocks, divisor) in enumerate(_encoder_levels(width, depth)):
        macs += blocks * _block_macs(level_width) / divisor
        if index:  # 2x2 stride-2 down-sampling conv into this level
            macs += 4.0 * (level_width // 2) * level_width / divisor
    return macs


def decoder_macs_per_pixel(width: int, depth: int, code_channels: int, out_channels: int) -> float:
    """Forward multiply-accumulates of the decoder, per output pixel."""
    fused = 16 * width
    macs = (code_channels + 8 * width) * fused / 4 ** DOWNSAMPLINGS + fused * fused / 4 ** DOWNSAMPLINGS
    for level_width, blocks, divisor in _decoder_levels(width, depth):
        macs += blocks * _block_macs(level_width) / divisor
    # 1x1 expansions before the pixel shuffles at H/4 and H/2, and the output conv.
    macs += (4 * width) * (8 * width) / 16 + (2 * width) * (4 * width) / 4 + 9.0 * width * out_channels
    return macs


def training_flops_per_slice(size: NetworkSize, pixels: int, channels: int, code_channels: int = 6) -> float:
    """Approximate FLOPs of one Stage-I training step per slice (posterior + common encoder + decoder)."""
    macs = (encoder_macs_per_pixel(size.posterior_width, size.depth, channels)
            + encoder_macs_per_pixel(size.common_width, size.depth, channels)
            + decoder_macs_per_pixel(size.decoder_width, size.depth, code_channels, channels))
    return _TRAINING_FLOPS_PER_MAC * macs * pixels


def training_memory_bytes(size: NetworkSize, pixels: int, batch_size: int, parameters: float) -> float:
    """Approximate peak memory of a Stage-I training step: stored activations plus weights, grads, AdamW state."""
    stored = 0.0
    for width, levels in ((size.posterior_width, _encoder_levels(size.posterior_width, size.depth)),
                          (size.common_width, _encoder_levels(size.common_width, size.depth)),
                          (size.decoder_width, _decoder_levels(size.decoder_width, size.depth))):
        for level_width, blocks, divisor in levels:
            stored += blocks * _STORED_PER_BLOCK_CHANNEL * level_width * pixels / divisor
    return 4.0 * (stored * batch_size + 4 * parameters)


def approximate_parameters(size: NetworkSize, channels: int, code_channels: int = 6) -> float:
    """Approximate parameter count of the Stage-I generator (blocks dominate: 7c^2 + 33c each)."""
    total = 0.0
    for width, levels in ((size.posterior_width, _encoder_levels(size.posterior_width, size.depth)),
                          (size.common_width, _encoder_levels(size.common_width, size.depth)),
                          (size.decoder_width, _decoder_levels(size.decoder_width, size.depth))):
        for level_width, blocks, _ in levels:
            total += blocks * (7 * level_width ** 2 + 33 * level_width)
    fused = 16 * size.decoder_width
    total += (code_channels + 8 * size.decoder_width) * fused + fused * fused
    return total
