"""CodeBrain networks: Stage-I generator and Stage-II prior encoder.

Wu et al., "Virtual Full-stack Scanning of Brain MRI via Imputing Any Quantised Code", CVPR 2026.

Stage I (:class:`StageOneModel`) learns full-stack quantised codes: ``codes = FSQ(E_posterior(x_full))``,
``F_c = E_c(x_masked)``, ``x_hat = D([codes, F_c])``. Stage II (:class:`PriorEncoder`) predicts the codes from
the masked stack alone, as ordinal grades (paper) or as classes (ablation). Missing modalities are
zero-filled in ``x_masked``; no network is told which ones are missing.

Ablations are configuration switches (:class:`CodeBrainConfig`), never other classes: ``quantizer`` selects FSQ
(paper), a learned VQ codebook or continuous codes (:mod:`codebrain_seg.networks.quantizers`), ``head`` the
Stage-II output, ``use_fc`` whether F_c is fused. Whatever the quantiser, imputation is
``levels = prior.logits_to_levels(prior(x_masked))``, ``codes = stage_one.quantizer.levels_to_codes(levels)``
(or :meth:`StageOneModel.levels_to_codes`), ``x_hat = stage_one.decode(codes, x_masked)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from codebrain_seg.losses import decode_classification, decode_grading
from codebrain_seg.networks.fsq import FSQ, PAPER_LEVELS
from codebrain_seg.networks.nafnet import DOWNSAMPLING_FACTOR, Decoder, Encoder
from codebrain_seg.networks.quantizers import (
    DEFAULT_CODEBOOK_SIZE,
    DEFAULT_COMMITMENT_WEIGHT,
    ContinuousCode,
    VectorQuantizer,
)

QUANTIZERS = ("fsq", "vq", "continuous")
HEADS = ("grading", "cls", "regression")
# Stage-II heads each quantiser supports, the first being its default. Grading needs ordered levels, which a
# VQ codebook does not have (its indices are arbitrary), so VQ is classified; continuous codes are regressed.
HEADS_BY_QUANTIZER = {"fsq": ("grading", "cls"), "vq": ("cls",), "continuous": ("regression",)}


@dataclass(frozen=True)
class CodeBrainConfig:
    """Architecture of the CodeBrain networks; defaults are the paper's (stored in the plans JSON).

    Attributes:
        in_channels: number of modalities C (input and output channels).
        fsq_levels: FSQ levels per code channel; ``d = len(fsq_levels)`` for every quantiser (VQ and continuous
            codes keep FSQ's code dimension so the ablations differ only in the quantisation).
        posterior_width: full-resolution width of E_posterior (its H/8 features have 8x this).
        common_width: full-resolution width of E_c and of E_prior (F_c has ``8 * common_width`` channels).
        decoder_width: full-resolution width of the decoder (``16 * decoder_width`` channels at H/8).
        depth: NAFBlocks at H/8 in every encoder and in the decoder.
        head: Stage-II head: ``'grading'`` (FSQ, ordinal, ``sum(L_i - 1)`` logits), ``'cls'`` (FSQ: ``sum(L_i)``
            class logits; VQ: ``codebook_size`` logits) or ``'regression'`` (continuous codes, d outputs).
        use_fc: fuse F_c in the decoder; ``False`` is the "no_fc" ablation (decode from codes only).
        quantizer: ``'fsq'`` (paper), ``'vq'`` (learned codebook) or ``'continuous'`` (tanh, no quantisation).
        codebook_size: VQ codebook entries K (ignored by the other quantisers).
        commitment_weight: VQ commitment beta (ignored by the other quantisers).
    """

    in_channels: int
    fsq_levels: tuple[int, ...] = PAPER_LEVELS
    posterior_width: int = 32
    common_width: int = 96
    decoder_width: int = 96
    depth: int = 6
    head: str = "grading"
    use_fc: bool = True
    quantizer: str = "fsq"
    codebook_size: int = DEFAULT_CODEBOOK_SIZE
    commitment_weight: float = DEFAULT_COMMITMENT_WEIGHT

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsq_levels", tuple(int(level) for level in self.fsq_levels))
        for name in ("in_channels", "posterior_width", "common_width", "decoder_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CodeBrainConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 0:
            raise ValueError(f"CodeBrainConfig.depth must be an integer >= 0, got {self.depth!r}")
        if not self.fsq_levels or any(level < 2 for level in self.fsq_levels):
            raise ValueError(f"CodeBrainConfig.fsq_levels must be integers >= 2, got {self.fsq_levels}")
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"CodeBrainConfig.quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.head not in HEADS_BY_QUANTIZER[self.quantizer]:
            raise ValueError(f"CodeBrainConfig.head must be one of {HEADS_BY_QUANTIZER[self.quantizer]} with the "
                             f"{self.quantizer!r} quantizer, got {self.head!r}")
        if not isinstance(self.use_fc, bool):
            raise ValueError(f"CodeBrainConfig.use_fc must be a bool, got {self.use_fc!r}")
        if not isinstance(self.codebook_size, int) or isinstance(self.codebook_size, bool) or self.codebook_size < 2:
            raise ValueError(f"CodeBrainConfig.codebook_size must be an integer >= 2, got {self.codebook_size!r}")
        object.__setattr__(self, "commitment_weight", float(self.commitment_weight))
        if self.commitment_weight < 0:
            raise ValueError(f"CodeBrainConfig.commitment_weight must be >= 0, got {self.commitment_weight!r}")

    @property
    def code_channels(self) -> int:
        """Number of code channels ``d``."""
        return len(self.fsq_levels)

    @property
    def fc_channels(self) -> int:
        """Channels of F_c, ``8 * common_width`` (0 when ``use_fc`` is off)."""
        return 8 * self.common_width if self.use_fc else 0

    @property
    def class_counts(self) -> tuple[int, ...]:
        """Classes per Stage-II target channel: FSQ ``L_i``, VQ ``(codebook_size,)``, continuous ``()``."""
        return {"fsq": self.fsq_levels, "vq": (self.codebook_size,), "continuous": ()}[self.quantizer]

    @property
    def num_logits(self) -> int:
        """Output channels of the prior encoder head for the chosen ``head``."""
        if self.head == "grading":
            return sum(level - 1 for level in self.fsq_levels)
        if self.head == "cls":
            return sum(self.class_counts)
        return self.code_channels

    def build_quantizer(self) -> nn.Module:
        """The configured quantiser (interface: :mod:`codebrain_seg.networks.quantizers`)."""
        if self.quantizer == "vq":
            return VectorQuantizer(self.codebook_size, self.code_channels, self.commitment_weight)
        if self.quantizer == "continuous":
            return ContinuousCode(self.code_channels)
        return FSQ(self.fsq_levels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (levels as a list)."""
        values = asdict(self)
        values["fsq_levels"] = list(self.fsq_levels)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "CodeBrainConfig":
        """Build from a dict such as the plans JSON entry; unknown keys raise ValueError."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown CodeBrainConfig keys {unknown}; expected a subset of {sorted(known)}")
        if "in_channels" not in values:
            raise ValueError("CodeBrainConfig needs 'in_channels'")
        return cls(**dict(values))


def _check_spatial(x: Tensor, in_channels: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{name} must be (B, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] % DOWNSAMPLING_FACTOR or x.shape[3] % DOWNSAMPLING_FACTOR:
        raise ValueError(
            f"{name} height and width must be divisible by {DOWNSAMPLING_FACTOR}, got {tuple(x.shape[2:])}"
        )


class StageOneModel(nn.Module):
    """Stage-I generator: posterior encoder + quantiser (FSQ, or the VQ / continuous ablation), common encoder, decoder.

    Args:
        config: architecture; ``config.use_fc = False`` builds no common encoder, ``config.quantizer`` picks the
            quantiser.

    Shapes: ``x_full`` and ``x_masked`` are ``(B, C, H, W)`` with H, W divisible by 8; codes are
    ``(B, d, H/8, W/8)``; F_c is ``(B, 8 * common_width, H/8, W/8)``.
    """

    def __init__(self, config: CodeBrainConfig) -> None:
        super().__init__()
        self.config = config
        self.posterior_encoder = Encoder(
            config.in_channels, config.posterior_width, config.depth, out_channels=config.code_channels
        )
        self.quantizer = config.build_quantizer()
        self.common_encoder = Encoder(config.in_channels, config.common_width, config.depth) if config.use_fc else None
        self.decoder = Decoder(
            config.code_channels, config.in_channels, config.decoder_width, config.depth, fc_channels=config.fc_channels
        )

    def encode_codes(self, x_full: Tensor) -> Tensor:
        """Quantised full-stack codes ``(B, d, H/8, W/8)`` (float32) from the complete stack ``(B, C, H, W)``."""
        _check_spatial(x_full, self.config.in_channels, "x_full")
        return self.quantizer(self.posterior_encoder(x_full))

    def encode_codes_with_loss(self, x_full: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`encode_codes` plus the quantiser's auxiliary loss (VQ codebook + commitment; 0 otherwise)."""
        _check_spatial(x_full, self.config.in_channels, "x_full")
        return self.quantizer.quantize_with_loss(self.posterior_encoder(x_full))

    def levels_to_codes(self, levels: Tensor) -> Tensor:
        """Code map for the decoder ``(B, d, h, w)`` from Stage-II targets / predictions, whatever the quantiser."""
        return self.quantizer.levels_to_codes(levels)

    def codes_to_levels(self, codes: Tensor) -> Tensor:
        """Stage-II targets of a code map (FSQ levels, VQ indices ``(B, 1, h, w)``, continuous codes)."""
        return self.quantizer.codes_to_levels(codes)

    def common_features(self, x_masked: Tensor) -> Tensor | None:
        """F_c ``(B, 8 * common_width, H/8, W/8)`` from the zero-filled stack, or None without F_c."""
        if self.common_encoder is None:
            return None
        _check_spatial(x_masked, self.config.in_channels, "x_masked")
        return self.common_encoder(x_masked)

    def decode(self, codes: Tensor, x_masked: Tensor | None = None, common_features: Tensor | None = None) -> Tensor:
        """Reconstruct all modalities from codes (oracle or predicted).

        Args:
            codes: ``(B, d, h, w)`` on the FSQ grid.
            x_masked: zero-filled stack ``(B, C, 8h, 8w)`` from which F_c is computed (ignored without F_c).
            common_features: precomputed F_c; takes precedence over ``x_masked``.

        Returns:
            Reconstruction ``(B, C, 8h, 8w)`` (unbounded; clamp only for metrics).
        """
        if self.common_encoder is not None and common_features is None:
            if x_masked is None:
                raise ValueError("decode needs x_masked (or common_features) because the model uses F_c")
            common_features = self.common_features(x_masked)
        return self.decoder(codes, common_features)

    def forward(self, x_full: Tensor, x_masked: Tensor, with_quantizer_loss: bool = False) -> tuple[Tensor, ...]:
        """Stage-I pass.

        Args:
            x_full: complete stack ``(B, C, H, W)``.
            x_masked: same stack with missing modalities zero-filled ``(B, C, H, W)``.
            with_quantizer_loss: also return the quantiser's auxiliary loss (inside the forward, so DDP sees
                the VQ codebook used).

        Returns:
            ``(reconstruction (B, C, H, W), codes (B, d, H/8, W/8), F_c (B, 8*common_width, H/8, W/8) or None)``,
            plus the scalar quantiser loss when ``with_quantizer_loss``.
        """
        codes, quantizer_loss = self.encode_codes_with_loss(x_full)
        common_features = self.common_features(x_masked)
        reconstruction = self.decoder(codes, common_features)
        if with_quantizer_loss:
            return reconstruction, codes, common_features, quantizer_loss
        return reconstruction, codes, common_features


class PriorEncoder(nn.Module):
    """Stage-II prior encoder E_prior: masked stack -> per-position logits over the code levels.

    An encoder of width ``common_width`` with a 1x1 head of ``sum(L_i - 1)`` ordinal logits ('grading')
    or ``sum(L_i)`` class logits ('cls'), channel groups in code-channel order; with the VQ quantiser 'cls' has
    ``codebook_size`` logits (one K-way class), and 'regression' (continuous codes) outputs d values. Decode them
    with :meth:`logits_to_levels`.

    Args:
        config: architecture (``in_channels``, ``fsq_levels``, ``common_width``, ``depth``, ``head``).
    """

    def __init__(self, config: CodeBrainConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.in_channels, config.common_width, config.depth, out_channels=config.num_logits)

    def forward(self, x_masked: Tensor) -> Tensor:
        """Logits ``(B, num_logits, H/8, W/8)`` from the zero-filled stack ``(B, C, H, W)``."""
        _check_spatial(x_masked, self.config.in_channels, "x_masked")
        return self.encoder(x_masked)

    def logits_to_levels(self, logits: Tensor) -> Tensor:
        """Decode head outputs ``(B, num_logits, h, w)`` to the quantiser's targets.

        Returns:
            FSQ: integer levels ``(B, d, h, w)``; VQ: codebook indices ``(B, 1, h, w)`` (argmax); continuous:
            codes ``tanh(output)`` ``(B, d, h, w)`` float32. Turn them into the decoder's code map with the
            quantiser's ``levels_to_codes``.
        """
        if self.config.head == "grading":
            return decode_grading(logits, self.config.fsq_levels)
        if self.config.head == "cls":
            return decode_classification(logits, self.config.class_counts)
        return torch.tanh(logits.float())


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (trainable or not)."""
    return sum(parameter.numel() for parameter in module.parameters())
