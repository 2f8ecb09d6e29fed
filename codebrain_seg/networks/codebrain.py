"""CodeBrain networks: Stage-I generator and Stage-II prior encoder.

Wu et al., "Virtual Full-stack Scanning of Brain MRI via Imputing Any Quantised Code", CVPR 2026.

Stage I (:class:`StageOneModel`) learns full-stack quantised codes: ``codes = FSQ(E_posterior(x_full))``,
``F_c = E_c(x_masked)``, ``x_hat = D([codes, F_c])``. Stage II (:class:`PriorEncoder`) predicts the codes from
the masked stack alone, as ordinal grades (paper) or as classes (ablation). Missing modalities are
zero-filled in ``x_masked``; no network is told which ones are missing.

Ablations are configuration switches (:class:`CodeBrainConfig`), never other classes: ``quantizer`` selects FSQ
(paper), a learned VQ codebook or continuous codes (:mod:`codebrain_seg.networks.quantizers`), ``head`` the
Stage-II output, ``use_fc`` whether F_c is fused, ``blank_fc`` the blank-F_c control (E_c reads zeros) and
``fusion_init`` how the decoder's fusion weights of the code channels start. Whatever the quantiser, imputation is
``levels = prior.logits_to_levels(prior(x_masked), decoding)``, ``codes = stage_one.levels_to_codes(levels)``,
``x_hat = stage_one.impute_from_codes(codes, x_masked, available)``; ``decoding`` is ``'expected'`` (FSQ: the
expected level, this project's default) or the reference's ``'count'`` (:data:`CODE_DECODINGS`).

``variant`` selects the code layout. ``'cvpr'`` (default): one full-stack code of d channels from all C modalities,
E_c and the decoder see and produce the whole stack. ``'v1'`` (Wu et al., "CodeBrain: Impute Any Brain MRI via
Instance-specific Scalar-quantized Codes", arXiv v1): one code of d channels *per modality*, from a posterior
encoder that reads a single modality; F_c from a single *source* modality by E_s (the same ``common_encoder``
module, one input channel); the decoder turns one modality's code plus F_c into that one modality. Every module
except the prior encoder is therefore modality-agnostic (one input channel), as in the v1 paper (its Fig. 2);
the Stage-II prior encoder reads the masked C-stack and predicts the concatenation of all C codes (``C * d``
channels, modality-major). Imputing modality ``t`` decodes its predicted code with F_c of a given source ``s``
(:func:`choose_sources`: random, or the most relevant one by a recorded source x target table).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from codebrain_seg.device import memory_format_of
from codebrain_seg.errors import InputError
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
VARIANTS = ("cvpr", "v1")
SOURCE_RULES = ("random", "relevant")
# How Stage II's FSQ logits become the decoder's code map: 'expected' (the default of imputation and validation) or
# the reference's 'count' (PriorEncoder.logits_to_levels).
CODE_DECODINGS = ("expected", "count")


def check_code_decoding(decoding: str) -> str:
    """``decoding`` if it is one of :data:`CODE_DECODINGS`, else InputError naming them."""
    if decoding not in CODE_DECODINGS:
        raise InputError(f"code decoding must be one of {', '.join(CODE_DECODINGS)}, got {decoding!r}")
    return decoding
# Stage-II heads each quantiser supports, the first being its default. Grading needs ordered levels, which a
# VQ codebook does not have (its indices are arbitrary), so VQ is classified; continuous codes are regressed.
HEADS_BY_QUANTIZER = {"fsq": ("grading", "cls"), "vq": ("cls",), "continuous": ("regression",)}
FUSION_INITS = ("reference", "balanced")


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
        variant: ``'cvpr'`` (one full-stack code) or ``'v1'`` (one code per modality; module docstring).
        blank_fc: the blank-F_c control (ablation ``fc_blank``): the F_c architecture, parameters and initial
            weights unchanged, but E_c reads zeros instead of the masked stack, in training and inference alike
            (:meth:`StageOneModel.common_features`), so F_c carries no information about the given sequences.
            Needs ``use_fc``.
        fusion_init: ``'reference'`` (PyTorch's default init of the decoder's 1x1 fusion conv, as the reference)
            or ``'balanced'`` (ablation ``fc_balanced``): the code columns of that conv rescaled at init to the
            scale the no-F_c decoder gives them (:func:`balance_fusion_init`). No-op without F_c.
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
    variant: str = "cvpr"
    blank_fc: bool = False
    fusion_init: str = "reference"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fsq_levels", tuple(int(level) for level in self.fsq_levels))
        for name in ("in_channels", "posterior_width", "common_width", "decoder_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"CodeBrainConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.depth, int) or isinstance(self.depth, bool) or self.depth < 0:
            raise InputError(f"CodeBrainConfig.depth must be an integer >= 0, got {self.depth!r}")
        if not self.fsq_levels or any(level < 2 for level in self.fsq_levels):
            raise InputError(f"CodeBrainConfig.fsq_levels must be integers >= 2, got {self.fsq_levels}")
        if self.quantizer not in QUANTIZERS:
            raise InputError(f"CodeBrainConfig.quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.head not in HEADS_BY_QUANTIZER[self.quantizer]:
            raise InputError(f"CodeBrainConfig.head must be one of {HEADS_BY_QUANTIZER[self.quantizer]} with the "
                             f"{self.quantizer!r} quantizer, got {self.head!r}")
        if not isinstance(self.use_fc, bool):
            raise InputError(f"CodeBrainConfig.use_fc must be a bool, got {self.use_fc!r}")
        if not isinstance(self.codebook_size, int) or isinstance(self.codebook_size, bool) or self.codebook_size < 2:
            raise InputError(f"CodeBrainConfig.codebook_size must be an integer >= 2, got {self.codebook_size!r}")
        object.__setattr__(self, "commitment_weight", float(self.commitment_weight))
        if self.commitment_weight < 0:
            raise InputError(f"CodeBrainConfig.commitment_weight must be >= 0, got {self.commitment_weight!r}")
        if not isinstance(self.blank_fc, bool):
            raise InputError(f"CodeBrainConfig.blank_fc must be a bool, got {self.blank_fc!r}")
        if self.blank_fc and not self.use_fc:
            raise InputError("CodeBrainConfig.blank_fc (E_c fed zeros) needs use_fc=True: without F_c there is "
                             "no common encoder to blank")
        if self.fusion_init not in FUSION_INITS:
            raise InputError(f"CodeBrainConfig.fusion_init must be one of {FUSION_INITS}, got {self.fusion_init!r}")
        if self.variant not in VARIANTS:
            raise InputError(f"CodeBrainConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "v1" and self.in_channels < 2:
            raise InputError("the v1 variant needs at least 2 modalities (an anchor and another source), "
                             f"got in_channels={self.in_channels}")

    @property
    def code_channels(self) -> int:
        """Number of code channels ``d`` of one code (the full-stack code, or one modality's code in v1)."""
        return len(self.fsq_levels)

    @property
    def num_codes(self) -> int:
        """Codes per position: 1 full-stack code (cvpr) or one per modality (v1)."""
        return self.in_channels if self.variant == "v1" else 1

    @property
    def image_channels(self) -> int:
        """Image channels read by E_posterior and E_c and written by the decoder: C (cvpr) or 1 (v1)."""
        return 1 if self.variant == "v1" else self.in_channels

    @property
    def target_levels(self) -> tuple[int, ...]:
        """FSQ levels of every Stage-II target code channel: ``fsq_levels`` repeated for each code."""
        return self.fsq_levels * self.num_codes

    @property
    def fc_channels(self) -> int:
        """Channels of F_c, ``8 * common_width`` (0 when ``use_fc`` is off)."""
        return 8 * self.common_width if self.use_fc else 0

    @property
    def class_counts(self) -> tuple[int, ...]:
        """Classes per Stage-II target channel: FSQ ``L_i``, VQ ``(codebook_size,)``, continuous ``()``."""
        per_code = {"fsq": self.fsq_levels, "vq": (self.codebook_size,), "continuous": ()}[self.quantizer]
        return per_code * self.num_codes

    @property
    def num_logits(self) -> int:
        """Output channels of the prior encoder head for the chosen ``head`` (all codes of a position)."""
        if self.head == "grading":
            return sum(level - 1 for level in self.target_levels)
        if self.head == "cls":
            return sum(self.class_counts)
        return self.code_channels * self.num_codes

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
        """Build from a dict such as the plans JSON entry (keys added later default, e.g. ``blank_fc`` and
        ``fusion_init`` of checkpoints written before them: off and ``'reference'``); unknown keys raise ValueError."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown CodeBrainConfig keys {unknown}; expected a subset of {sorted(known)}")
        if "in_channels" not in values:
            raise InputError("CodeBrainConfig needs 'in_channels'")
        return cls(**dict(values))


def balance_fusion_init(fuse: nn.Conv2d, code_channels: int) -> float:
    """Rescale, in place, the code columns of a freshly initialised fusion conv to the no-F_c scale.

    PyTorch initialises a conv's weights uniformly in ``±1/sqrt(fan_in)``. The decoder's 1x1 fusion conv reads
    ``[codes (d channels), F_c (f channels)]``, so with F_c its code columns start ``sqrt((d + f) / d)`` times
    smaller than in the no-F_c decoder (fan-in d): about 6.6x for d = 6, f = 256. Multiplying those columns by
    ``s = sqrt((d + f) / d)`` gives them the no-F_c decoder's bound ``1/sqrt(d)``; the F_c columns and the bias
    keep theirs. The same random draws are only scaled (no extra draw), so everything else initialises as with
    ``'reference'`` for the same seed.

    Args:
        fuse: the conv, weight ``(out, d + f, 1, 1)``.
        code_channels: d (the first d input channels are the codes).

    Returns:
        The factor ``s`` applied (1.0 without F_c).
    """
    fan_in = fuse.weight.shape[1] * fuse.weight.shape[2] * fuse.weight.shape[3]
    scale = (fan_in / code_channels) ** 0.5
    with torch.no_grad():
        fuse.weight[:, :code_channels].mul_(scale)
    return scale


def choose_sources(available: Tensor, rule: str = "random", relevance: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
    """The source modality whose F_c decodes each target modality (v1 inference).

    Candidates for target ``t`` are the available modalities other than ``t`` (``t`` itself only when it is the
    sole available one, which happens only for an available target, never scored). ``'random'`` draws uniformly
    among them (v1 paper, Table 1); ``'relevant'`` takes the one with the largest ``relevance[s, t]`` (the v1
    paper's "most relevant source" option; here the Stage-I validation PSNR of reconstructing ``t`` from ``s``).

    Args:
        available: ``(B, C)`` bool, True = given.
        rule: ``'random'`` or ``'relevant'``.
        relevance: ``(C, C)`` source x target scores (higher = more relevant); needed for ``'relevant'``.
        generator: random stream of the ``'random'`` rule (on the CPU).

    Returns:
        ``(B, C)`` int64 source index per sample and target, on ``available``'s device.
    """
    if rule not in SOURCE_RULES:
        raise InputError(f"source rule must be one of {SOURCE_RULES}, got {rule!r}")
    if available.dim() != 2 or available.dtype != torch.bool:
        raise InputError(f"available must be a (B, C) bool tensor, got {tuple(available.shape)} {available.dtype}")
    if not bool(available.any(dim=1).all()):
        raise InputError("every sample needs at least one available modality to take F_c from")
    batch, channels = available.shape
    eye = torch.eye(channels, dtype=torch.bool, device=available.device)
    candidates = available[:, :, None] & ~eye[None]  # (B, source, target)
    alone = ~candidates.any(dim=1, keepdim=True)
    candidates = candidates | (alone & eye[None])  # a target that is the only given modality takes itself
    if rule == "relevant":
        if relevance is None or tuple(relevance.shape) != (channels, channels):
            raise InputError(f"the 'relevant' source rule needs a ({channels}, {channels}) source x target "
                             "relevance table (recorded by Stage I validation of the v1 variant)")
        scores = torch.nan_to_num(relevance.float().to(available.device), nan=-1e9)[None].expand(batch, -1, -1)
    else:
        scores = torch.rand((batch, channels, channels), generator=generator).to(available.device)
    return scores.masked_fill(~candidates, float("-inf")).argmax(dim=1)


def _check_spatial(x: Tensor, in_channels: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise InputError(f"{name} must be (B, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] % DOWNSAMPLING_FACTOR or x.shape[3] % DOWNSAMPLING_FACTOR:
        raise InputError(
            f"{name} height and width must be divisible by {DOWNSAMPLING_FACTOR}, got {tuple(x.shape[2:])}"
        )


class StageOneModel(nn.Module):
    """Stage-I generator: posterior encoder + quantiser (FSQ, or the VQ / continuous ablation), common encoder, decoder.

    Args:
        config: architecture; ``config.use_fc = False`` builds no common encoder, ``config.quantizer`` picks the
            quantiser, ``config.variant`` the code layout (module docstring).

    Shapes: ``x_full`` and ``x_masked`` are ``(B, C, H, W)`` with H, W divisible by 8; code maps are
    ``(B, num_codes * d, H/8, W/8)`` (cvpr: one code of d channels; v1: C codes, modality-major); F_c is
    ``(B, 8 * common_width, H/8, W/8)``.
    """

    def __init__(self, config: CodeBrainConfig) -> None:
        super().__init__()
        self.config = config
        self.posterior_encoder = Encoder(
            config.image_channels, config.posterior_width, config.depth, out_channels=config.code_channels
        )
        self.quantizer = config.build_quantizer()
        self.common_encoder = (Encoder(config.image_channels, config.common_width, config.depth)
                               if config.use_fc else None)
        self.decoder = Decoder(
            config.code_channels, config.image_channels, config.decoder_width, config.depth,
            fc_channels=config.fc_channels
        )
        if config.fusion_init == "balanced":
            balance_fusion_init(self.decoder.fuse, config.code_channels)

    @property
    def per_modality(self) -> bool:
        """True for the v1 layout (one code per modality)."""
        return self.config.variant == "v1"

    def _fold(self, maps: Tensor) -> Tensor:
        """v1: ``(B, C * k, ...)`` -> ``(B * C, k, ...)`` (one row per modality); identity for cvpr."""
        if not self.per_modality:
            return maps
        batch, channels = maps.shape[:2]
        codes = self.config.num_codes
        if channels % codes:
            raise InputError(f"a v1 map must have a multiple of {codes} channels (one group per modality), "
                             f"got shape {tuple(maps.shape)}")
        return maps.reshape(batch * codes, channels // codes, *maps.shape[2:])

    def _unfold(self, maps: Tensor) -> Tensor:
        """Inverse of :meth:`_fold`."""
        if not self.per_modality:
            return maps
        codes = self.config.num_codes
        return maps.reshape(maps.shape[0] // codes, codes * maps.shape[1], *maps.shape[2:])

    def encode_modality(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """One code per image and the quantiser loss: ``(N, image_channels, H, W)`` -> ``(N, d, H/8, W/8)``."""
        _check_spatial(images, self.config.image_channels, "images")
        return self.quantizer.quantize_with_loss(self.posterior_encoder(images))

    def encode_codes(self, x_full: Tensor) -> Tensor:
        """Quantised codes ``(B, num_codes * d, H/8, W/8)`` (float32) of the complete stack ``(B, C, H, W)``."""
        return self.encode_codes_with_loss(x_full)[0]

    def encode_codes_with_loss(self, x_full: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`encode_codes` plus the quantiser's auxiliary loss (VQ codebook + commitment; 0 otherwise)."""
        _check_spatial(x_full, self.config.in_channels, "x_full")
        if self.per_modality:  # every modality through the same single-channel encoder, as one batch
            x_full = x_full.reshape(-1, 1, *x_full.shape[2:]).contiguous(memory_format=memory_format_of(x_full))
        codes, loss = self.encode_modality(x_full)
        return self._unfold(codes), loss

    def levels_to_codes(self, levels: Tensor) -> Tensor:
        """Code map for the decoder from Stage-II targets / predictions, whatever the quantiser and layout."""
        return self._unfold(self.quantizer.levels_to_codes(self._fold(levels)))

    def codes_to_levels(self, codes: Tensor) -> Tensor:
        """Stage-II targets of a code map (FSQ levels, VQ indices, continuous codes; one group per code)."""
        return self._unfold(self.quantizer.codes_to_levels(self._fold(codes)))

    def common_features(self, x_masked: Tensor) -> Tensor | None:
        """F_c ``(B, 8 * common_width, H/8, W/8)`` of ``(B, image_channels, H, W)`` (cvpr: the zero-filled stack;
        v1: one source modality), or None without F_c.

        With ``config.blank_fc`` E_c reads zeros of the same shape instead: every path to F_c (training, validation,
        the predictors) comes through here, so the control is blank everywhere."""
        if self.common_encoder is None:
            return None
        _check_spatial(x_masked, self.config.image_channels, "common encoder input")
        if self.config.blank_fc:
            x_masked = torch.zeros_like(x_masked)
        return self.common_encoder(x_masked)

    def decode(self, codes: Tensor, x_masked: Tensor | None = None, common_features: Tensor | None = None,
               sources: Tensor | None = None, targets: Sequence[int] | None = None) -> Tensor:
        """Reconstruct all modalities from codes (oracle or predicted).

        Args:
            codes: ``(B, num_codes * d, h, w)`` code map.
            x_masked: zero-filled stack ``(B, C, 8h, 8w)`` from which F_c is computed (ignored without F_c).
            common_features: precomputed F_c (cvpr only); takes precedence over ``x_masked``.
            sources: v1 only, ``(B, C)`` int64 source modality of each target (:func:`choose_sources`).
            targets: v1 only, the modalities to decode (default all); the others are returned as zeros.

        Returns:
            Reconstruction ``(B, C, 8h, 8w)`` (unbounded; clamp only for metrics).
        """
        if self.per_modality:
            return self._decode_per_modality(codes, x_masked, sources, targets)
        if self.common_encoder is not None and common_features is None:
            if x_masked is None:
                raise InputError("decode needs x_masked (or common_features) because the model uses F_c")
            common_features = self.common_features(x_masked)
        return self.decoder(codes, common_features)

    def decode_modality(self, codes: Tensor, source_images: Tensor | None) -> Tensor:
        """v1: one modality ``(N, 1, 8h, 8w)`` from its code ``(N, d, h, w)`` and F_c of a source ``(N, 1, 8h, 8w)``."""
        return self.decoder(codes, self.common_features(source_images) if self.common_encoder is not None else None)

    def _decode_per_modality(self, codes: Tensor, x_masked: Tensor | None, sources: Tensor | None,
                             targets: Sequence[int] | None) -> Tensor:
        channels, width = self.config.in_channels, self.config.code_channels
        targets = list(range(channels)) if targets is None else sorted({int(t) for t in targets})
        if not targets or not all(0 <= t < channels for t in targets):
            raise InputError(f"targets must be modality indices in 0..{channels - 1}, got {targets}")
        batch = codes.shape[0]
        if codes.dim() != 4 or codes.shape[1] != channels * width:
            raise InputError(f"v1 codes must be (B, {channels} x {width}, h, w), got {tuple(codes.shape)}")
        selected = torch.stack([codes[:, t * width:(t + 1) * width] for t in targets], dim=1).flatten(0, 1)
        source_images = None
        if self.common_encoder is not None:
            if x_masked is None or sources is None:
                raise InputError("v1 decoding needs x_masked and the source modality of each target (sources)")
            _check_spatial(x_masked, channels, "x_masked")
            if tuple(sources.shape) != (batch, channels):
                raise InputError(f"sources must be ({batch}, {channels}), got {tuple(sources.shape)}")
            index = sources[:, targets].to(x_masked.device)  # (B, T)
            gathered = torch.gather(x_masked, 1, index[:, :, None, None].expand(-1, -1, *x_masked.shape[2:]))
            source_images = gathered.flatten(0, 1).unsqueeze(1).contiguous(memory_format=memory_format_of(x_masked))
        decoded = self.decode_modality(selected, source_images).reshape(batch, len(targets),
                                                                        *self._image_size(selected))
        if len(targets) == channels:
            return decoded
        output = decoded.new_zeros((batch, channels) + tuple(decoded.shape[2:]))
        output[:, targets] = decoded
        return output

    @staticmethod
    def _image_size(codes: Tensor) -> tuple[int, int]:
        return codes.shape[2] * DOWNSAMPLING_FACTOR, codes.shape[3] * DOWNSAMPLING_FACTOR

    def impute_from_codes(self, codes: Tensor, x_masked: Tensor, available: Tensor | None = None,
                          source_rule: str = "random", relevance: Tensor | None = None,
                          generator: torch.Generator | None = None) -> Tensor:
        """Decode every modality ``(B, C, H, W)`` from a code map and the zero-filled stack: the imputation path.

        cvpr: ``D(codes, E_c(x_masked))``. v1: each missing modality from its own code and F_c of a source chosen
        by ``source_rule`` among the available ones (:func:`choose_sources`); available modalities are not decoded
        (zeros). ``available`` is ``(C,)`` or ``(B, C)`` bool; default: the channels of each slice that are not
        all zero.
        """
        if not self.per_modality:
            return self.decode(codes, x_masked)
        if available is None:
            available = x_masked.flatten(2).ne(0).any(dim=2)
            # A slice without any signal (outside every field of view) has no source; any channel decodes it.
            available[~available.any(dim=1)] = True
        available = available.to(torch.bool)
        if available.dim() == 1:
            available = available[None].expand(x_masked.shape[0], -1)
        missing = [t for t in range(self.config.in_channels) if not bool(available[:, t].all())]
        if not missing:
            return torch.zeros_like(x_masked)
        sources = choose_sources(available.cpu(), source_rule, relevance, generator)
        return self.decode(codes, x_masked, sources=sources, targets=missing)

    def forward(self, x_full: Tensor, x_masked: Tensor, with_quantizer_loss: bool = False,
                anchor: int | None = None, source: int | None = None) -> tuple[Tensor, ...]:
        """Stage-I pass.

        Args:
            x_full: complete stack ``(B, C, H, W)``.
            x_masked: same stack with missing modalities zero-filled ``(B, C, H, W)``.
            with_quantizer_loss: also return the quantiser's auxiliary loss (inside the forward, so DDP sees
                the VQ codebook used).
            anchor, source: v1 only: the modality reconstructed from its own code, and the given modality F_c is
                taken from (``anchor != source``).

        Returns:
            cvpr: ``(reconstruction (B, C, H, W), codes (B, d, H/8, W/8), F_c or None)``; v1:
            ``(anchor reconstruction (B, 1, H, W), anchor code (B, d, H/8, W/8), F_c of the source or None)``;
            plus the scalar quantiser loss when ``with_quantizer_loss``.
        """
        if self.per_modality:
            channels = self.config.in_channels
            if anchor is None or source is None or anchor == source or not (0 <= anchor < channels
                                                                            and 0 <= source < channels):
                raise InputError(f"the v1 Stage-I pass needs an anchor and a different source modality in "
                                 f"0..{channels - 1}, got anchor={anchor!r}, source={source!r}")
            codes, quantizer_loss = self.encode_modality(x_full[:, anchor:anchor + 1])
            common_features = self.common_features(x_masked[:, source:source + 1])
        else:
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
    ``codebook_size`` logits (one K-way class), and 'regression' (continuous codes) outputs d values. In the v1
    variant these are repeated for each of the C per-modality codes (modality-major). Decode them with
    :meth:`logits_to_levels`.

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

    def logits_to_levels(self, logits: Tensor, decoding: str = "count") -> Tensor:
        """Decode head outputs ``(B, num_logits, h, w)`` to the quantiser's targets.

        Args:
            logits: the head's output.
            decoding: ``'count'`` (the reference's: integer levels) or ``'expected'`` (FSQ levels only: the expected
                level under the head's probabilities, float32; VQ indices and continuous codes are unchanged).

        Returns:
            FSQ: levels ``(B, d, h, w)``; VQ: codebook indices ``(B, 1, h, w)`` (argmax); continuous: codes
            ``tanh(output)`` ``(B, d, h, w)`` float32. Turn them into the decoder's code map with the quantiser's
            ``levels_to_codes`` (FSQ's takes fractional levels too).
        """
        expected = check_code_decoding(decoding) == "expected" and self.config.quantizer == "fsq"
        if self.config.head == "grading":
            return decode_grading(logits, self.config.target_levels, expected)
        if self.config.head == "cls":
            return decode_classification(logits, self.config.class_counts, expected)
        return torch.tanh(logits.float())


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (trainable or not)."""
    return sum(parameter.numel() for parameter in module.parameters())
