"""The direct-regression baseline's network: CodeBrain's common encoder E_c and decoder D, pixel to pixel, no codes."""
from __future__ import annotations

from torch import Tensor, nn

from codebrain_seg.networks.codebrain import CodeBrainConfig
from codebrain_seg.networks.nafnet import Decoder, Encoder


class RegressionNetwork(nn.Module):
    """Direct-regression baseline: CodeBrain's common encoder E_c and decoder D trained pixel-to-pixel, no codes.

    The decoder is built with one code channel that always receives zeros (the decoder class fuses ``[codes,
    F_c]``): it adds nothing but a constant to the fusion layer, so the output depends on ``E_c(x_masked)`` only.

    Args:
        config: CodeBrain architecture (``in_channels``, ``common_width``, ``decoder_width``, ``depth``).
    """

    def __init__(self, config: CodeBrainConfig) -> None:
        super().__init__()
        self.config = config
        self.common_encoder = Encoder(config.in_channels, config.common_width, config.depth)
        self.decoder = Decoder(1, config.in_channels, config.decoder_width, config.depth,
                               fc_channels=8 * config.common_width)

    def forward(self, x_masked: Tensor) -> Tensor:
        """All modalities ``(B, C, H, W)`` (unbounded) from the zero-filled stack ``(B, C, H, W)``."""
        features = self.common_encoder(x_masked)
        codes = features.new_zeros((features.shape[0], 1) + tuple(features.shape[2:]))
        return self.decoder(codes, features)
