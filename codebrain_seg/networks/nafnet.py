"""NAFNet building blocks (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) as used by CodeBrain.

CodeBrain builds every network from the same NAFBlock: a plain encoder that down-samples by 8 without skip
connections (posterior, common and prior encoders) and a pixel-shuffle decoder that turns the
``[code, F_c]`` map at ``H/8`` back into all ``C`` modalities.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codebrain_seg.errors import InputError

DOWNSAMPLING_FACTOR = 8  # three stride-2 stages in every encoder


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channel dimension of a ``(B, C, H, W)`` map, per pixel, with affine terms."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` ``(B, C, H, W)`` across C (biased variance); keeps the input's dtype and memory format.

        A bf16 / fp16 ``x`` (what autocast's convolutions emit) stays in that dtype: the affine terms are cast
        to it, so the residual stream of a NAFBlock is not promoted to fp32 by fp32 parameters.
        """
        if x.dtype not in (torch.bfloat16, torch.float16):
            return self._written_out(x)
        if x.is_contiguous(memory_format=torch.channels_last):
            # Channels-last (B, C, H, W) is a contiguous (B, H, W, C): the fused kernel normalises its last
            # dimension with fp32 statistics, in one pass instead of the written-out chain's eight.
            normalised = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight.to(x.dtype),
                                      self.bias.to(x.dtype), self.eps)
            return normalised.permute(0, 3, 1, 2)
        return self._written_out(x.float()).to(x.dtype)  # rare layout: fp32 arithmetic, like the fused kernel

    def _written_out(self, x: Tensor) -> Tensor:
        # Written out rather than F.layer_norm on a permuted view: in fp32 on CPU this is several times
        # faster in the backward pass, it does not switch a contiguous model to channels-last, and it is the
        # reference implementation's arithmetic (identical losses from identical seeds).
        mean = x.mean(dim=1, keepdim=True)
        centred = x - mean
        variance = centred.square().mean(dim=1, keepdim=True)
        normalised = centred * torch.rsqrt(variance + self.eps)
        return normalised * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: ``(B, 2c, H, W) -> (B, c, H, W)``."""

    def forward(self, x: Tensor) -> Tensor:
        """Gate the first half of the channels with the second half."""
        first, second = x.chunk(2, dim=1)
        return first * second


class NAFBlock(nn.Module):
    """NAFNet block (expansion 2 in both branches, no dropout); ``7c^2 + 33c`` parameters.

    Spatial-mixing branch: LN -> 1x1 (c->2c) -> depthwise 3x3 -> SimpleGate -> simplified channel attention
    -> 1x1 (c->c), added with a per-channel scale ``beta``; feed-forward branch: LN -> 1x1 (c->2c) ->
    SimpleGate -> 1x1 (c->c), added with scale ``gamma``. ``beta`` and ``gamma`` start at 0, so a new
    block is the identity.

    Args:
        channels: number of channels ``c`` (input = output).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = 2 * channels
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.gate = SimpleGate()
        self.attention = nn.Conv2d(channels, channels, kernel_size=1)  # simplified channel attention
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.conv5 = nn.Conv2d(channels, channels, kernel_size=1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to ``x`` ``(B, c, H, W)``; returns the same shape."""
        y = self.gate(self.conv2(self.conv1(self.norm1(x))))
        y = y * self.attention(y.mean(dim=(2, 3), keepdim=True))
        # The scales take the branch's dtype: under bf16 autocast an fp32 beta / gamma would promote the
        # residual stream to fp32, and mixed bf16 x fp32 elementwise work is slower on CPU than either dtype
        # alone (about a third of a batch-1 step at 240 x 240). In fp32 the casts are no-ops.
        y = self.conv3(y)
        x = x + self.beta.to(y.dtype) * y
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return x + self.gamma.to(y.dtype) * y


def _blocks(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(channels) for _ in range(count)))


class Encoder(nn.Module):
    """Plain NAFNet encoder without skips: ``(B, C_in, H, W) -> (B, C_out, H/8, W/8)``.

    3x3 conv to ``width`` + 1 block at H; three 2x2 stride-2 convs doubling the width, with 1 block at H/2
    and H/4 and ``depth`` blocks at H/8 (``8 * width`` channels); optional 1x1 output projection.

    Args:
        in_channels: input channels (number of modalities C).
        width: channels at full resolution (32 for E_posterior, 96 for E_c and E_prior in the paper).
        depth: number of blocks at H/8 (6 in the paper).
        out_channels: if given, a 1x1 convolution projects ``8 * width`` to this many channels.
    """

    def __init__(self, in_channels: int, width: int, depth: int = 6, out_channels: int | None = None) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or depth < 0:
            raise InputError(
                f"Encoder needs in_channels >= 1, width >= 1, depth >= 0; got {in_channels}, {width}, {depth}"
            )
        self.stem = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        stages: list[nn.Module] = [NAFBlock(width)]
        channels = width
        for level in range(3):
            stages.append(nn.Conv2d(channels, 2 * channels, kernel_size=2, stride=2))
            channels *= 2
            stages.append(_blocks(channels, depth if level == 2 else 1))
        self.body = nn.Sequential(*stages)
        self.feature_channels = channels
        self.projection = nn.Conv2d(channels, out_channels, kernel_size=1) if out_channels else nn.Identity()
        self.out_channels = out_channels or channels

    def forward(self, x: Tensor) -> Tensor:
        """Encode ``x`` ``(B, C_in, H, W)`` (H, W divisible by 8) to ``(B, out_channels, H/8, W/8)``."""
        return self.projection(self.body(self.stem(x)))


class _UpStage(nn.Sequential):
    """1x1 conv to ``4 * out`` channels, PixelShuffle x2 to ``out`` channels, one NAFBlock."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, 4 * out_channels, kernel_size=1),
            nn.PixelShuffle(2),
            NAFBlock(out_channels),
        )


class Decoder(nn.Module):
    """Fusion decoder: ``[codes, F_c]`` at H/8 -> all C modalities at H (linear output, no squashing).

    1x1 conv to ``16 * width`` + ``depth`` blocks at H/8; three stages of 1x1 conv + PixelShuffle x2 + block
    giving ``4w`` (H/4), ``2w`` (H/2) and ``w`` (H) channels; 3x3 conv to ``out_channels``. For width 96 and
    774 input channels this is the reference 774 -> 1536 -> 384 -> 192 -> 96 -> C decoder.

    Args:
        code_channels: channels of the quantised code map ``d``.
        out_channels: number of predicted modalities C.
        width: channels at full resolution (96 in the paper).
        depth: blocks at H/8 (6 in the paper).
        fc_channels: channels of the common feature map F_c; 0 builds the "no_fc" ablation that decodes
            from the codes alone.
    """

    def __init__(
        self, code_channels: int, out_channels: int, width: int = 96, depth: int = 6, fc_channels: int = 0
    ) -> None:
        super().__init__()
        if code_channels < 1 or out_channels < 1 or width < 1 or depth < 0 or fc_channels < 0:
            raise InputError(
                "Decoder needs code_channels, out_channels, width >= 1 and depth, fc_channels >= 0; got "
                f"{code_channels}, {out_channels}, {width}, {depth}, {fc_channels}"
            )
        self.code_channels = code_channels
        self.fc_channels = fc_channels
        bottleneck = 16 * width
        self.fuse = nn.Conv2d(code_channels + fc_channels, bottleneck, kernel_size=1)
        self.body = _blocks(bottleneck, depth)
        self.up = nn.Sequential(
            _UpStage(bottleneck, 4 * width),
            _UpStage(4 * width, 2 * width),
            _UpStage(2 * width, width),
        )
        self.head = nn.Conv2d(width, out_channels, kernel_size=3, padding=1)

    def forward(self, codes: Tensor, common_features: Tensor | None = None) -> Tensor:
        """Decode.

        Args:
            codes: quantised codes ``(B, d, h, w)``.
            common_features: F_c ``(B, fc_channels, h, w)``; required iff the decoder was built with
                ``fc_channels > 0``.

        Returns:
            Reconstruction ``(B, C, 8h, 8w)`` (unbounded).
        """
        if codes.shape[1] != self.code_channels:
            raise InputError(f"codes must have {self.code_channels} channels, got shape {tuple(codes.shape)}")
        if self.fc_channels:
            if common_features is None:
                raise InputError(f"this decoder fuses F_c ({self.fc_channels} channels) but none was given")
            if common_features.shape[1] != self.fc_channels or common_features.shape[2:] != codes.shape[2:]:
                raise InputError(
                    f"F_c must be (B, {self.fc_channels}, {codes.shape[2]}, {codes.shape[3]}), "
                    f"got {tuple(common_features.shape)}"
                )
            fused = torch.cat([codes.to(common_features.dtype), common_features], dim=1)
        else:
            if common_features is not None:
                raise InputError("this decoder was built without F_c (fc_channels=0) but F_c was given")
            fused = codes
        return self.head(self.up(self.body(self.fuse(fused))))
