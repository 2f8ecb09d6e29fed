"""Conditional PatchGAN discriminator (pix2pix, Isola et al., CVPR 2017) with one output map per modality.

CodeBrain conditions the discriminator on the real full stack and scores each modality separately, so the
LSGAN target of a pasted-back reconstruction can be "real" for available channels and "fake" for missing ones.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from codebrain_seg.errors import InputError


def _down(in_channels: int, out_channels: int, normalise: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)]
    if normalise:
        layers.append(nn.InstanceNorm2d(out_channels, affine=False))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class PatchDiscriminator(nn.Module):
    """PatchGAN over ``[candidate, condition]``: ``(B, C, H, W) x 2 -> (B, C, H/16, W/16)`` patch scores.

    Four 4x4 stride-2 convs (64 without norm, then 128, 256, 512 with InstanceNorm without affine), each
    followed by LeakyReLU 0.2; zero-pad (left 1, right 0, top 1, bottom 0); a 4x4 conv to C channels without
    bias. A 256x256 input gives a 16x16 map. About 2.79 M parameters for C = 4.

    Args:
        in_channels: number of modalities C (the network sees 2C channels).
        base_width: channels of the first conv (64 in pix2pix).
    """

    def __init__(self, in_channels: int, base_width: int = 64) -> None:
        super().__init__()
        if in_channels < 1 or base_width < 1:
            raise InputError(f"PatchDiscriminator needs in_channels, base_width >= 1; got {in_channels}, {base_width}")
        self.in_channels = in_channels
        self.model = nn.Sequential(
            *_down(2 * in_channels, base_width, normalise=False),
            *_down(base_width, 2 * base_width, normalise=True),
            *_down(2 * base_width, 4 * base_width, normalise=True),
            *_down(4 * base_width, 8 * base_width, normalise=True),
            nn.ZeroPad2d((1, 0, 1, 0)),
            nn.Conv2d(8 * base_width, in_channels, kernel_size=4, padding=1, bias=False),
        )

    def forward(self, candidate: Tensor, condition: Tensor) -> Tensor:
        """Score ``candidate`` (real or reconstructed) given ``condition`` (the real full stack).

        Args:
            candidate: ``(B, C, H, W)``.
            condition: ``(B, C, H, W)``.

        Returns:
            Per-modality patch scores ``(B, C, H/16, W/16)`` (LSGAN targets: 1 real, 0 fake).
        """
        if candidate.shape != condition.shape or candidate.dim() != 4 or candidate.shape[1] != self.in_channels:
            raise InputError(
                f"candidate and condition must both be (B, {self.in_channels}, H, W); got "
                f"{tuple(candidate.shape)} and {tuple(condition.shape)}"
            )
        return self.model(torch.cat([candidate, condition], dim=1))
