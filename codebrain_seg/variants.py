"""The catalogue of method variants and ablation switches, and the one value object that names a CodeBrain variant.

CodeBrain (Wu et al., CVPR 2026; arXiv v1) is one set of networks, losses and one loop; its variants and the
papers' ablations are *configuration*, described here once and read by the trainers (network switches), the
predictors (which results folder) and the command lines (choices and help):

* ``variant``: ``cvpr`` (full-stack code, default) or ``v1`` (one FSQ code per sequence, d = 7, L = 5);
* ``code_dim``: d FSQ channels of L = 5 levels (the v1 paper's Fig. 6); None = the variant's default;
* ``ablation``: :data:`CODEBRAIN_ABLATIONS` (Tables 3 and 5 of the CVPR paper);
* ``loss_weights``: ``(lambda_m, lambda_a)`` of the Stage I reconstruction loss; a pair other than the plans'
  is part of the results-folder name;
* ``seed_index``: K > 0 names the K-th extra seed of a seeded experiment (``codebrain_ablate --seeds``), trained
  with ``seed + K`` into a ``-seedK`` folder; 0 is the ordinary run and adds nothing.

CoPeDiT's options (prompt source and model layout of Stage II) are described here too
(:data:`COPEDIT_ABLATIONS`).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from codebrain_seg.errors import InputError

# ---- CodeBrain -----------------------------------------------------------------------------------------------

CODEBRAIN_ABLATIONS: dict[str, str] = {
    "none": "the paper's method (FSQ codes, grading Stage II, PSNR loss, F_c)",
    "no_fc": "decode from the codes only, without F_c",
    "cls": "Stage II classifies each FSQ level (cross-entropy) instead of grading it",
    "l1": "L1 instead of the PSNR reconstruction loss in Stage I",
    "vq": "a learned VQ codebook (plans key vq_codebook_size, default 1024) instead of FSQ, and Stage II "
          "classifies the codebook index",
    "continuous": "no quantisation (the tanh-bounded posterior output is the code), and Stage II regresses it (L1)",
    "fc_blank": "the blank-F_c control: the F_c architecture and initial weights, but E_c reads zeros instead of "
                "the masked stack (training and inference)",
    "fc_balanced": "F_c, with the decoder's fusion weights of the code channels rescaled at init to the no-F_c "
                   "decoder's scale (fusion_init='balanced')",
}
# CodeBrainConfig fields each ablation sets ('l1' changes the Stage-I loss only, 'cls' only Stage II).
ABLATION_SWITCHES: dict[str, dict[str, Any]] = {
    "none": {},
    "no_fc": {"use_fc": False},
    "cls": {"head": "cls"},
    "l1": {},
    "vq": {"quantizer": "vq", "head": "cls"},
    "continuous": {"quantizer": "continuous", "head": "regression"},
    "fc_blank": {"blank_fc": True},
    "fc_balanced": {"fusion_init": "balanced"},
}
# Ablations that leave a stage unchanged reuse the plain method's run of that stage.
CODEBRAIN_SHARED_STAGES: dict[str, tuple[int, ...]] = {"cls": (1,)}

CODEBRAIN_VARIANTS: dict[str, str] = {
    "cvpr": "the CVPR 2026 method: one full-stack code from all sequences, F_c from the masked stack",
    "v1": "the arXiv v1 method: one FSQ code per sequence (d = 7, L = 5); Stage I rebuilds a random anchor sequence "
          "from its own code and F_c of another random sequence; Stage II predicts all sequences' codes",
}
CODE_DIM_LEVELS = 5  # FSQ levels of every channel when the code dimension is set (v1 paper: L = 5 for all d)
V1_CODE_DIM = 7  # the v1 paper's d
MAX_CODE_DIM = 16


def check_ablation(ablation: str, known: Sequence[str] = tuple(CODEBRAIN_ABLATIONS), method: str = "CodeBrain"
                   ) -> str:
    """``ablation`` if it is one of ``known``; InputError listing them otherwise."""
    if ablation not in known:
        raise InputError(f"ablation must be one of {tuple(known)} for {method}, got {ablation!r}")
    return ablation


def check_loss_weights(weights: Sequence[float | str], shown: str | None = None) -> tuple[float, float]:
    """``(lambda_m, lambda_a)`` as floats; InputError unless two finite non-negative numbers, not both 0."""
    try:
        pair = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(math.isfinite(w) and w >= 0 for w in pair) or not any(pair):
        given = shown if shown is not None else weights
        raise InputError(f"loss weights must be two non-negative numbers 'lambda_m,lambda_a' (missing, available), "
                         f"not both 0, e.g. '20,5' (the paper) or '1,1'; got {given!r}")
    return pair  # type: ignore[return-value]  (checked to have two entries)


def parse_loss_weights(text: str) -> tuple[float, float]:
    """``'20,5'`` -> ``(lambda_m, lambda_a)`` = (missing, available) reconstruction weights; InputError if malformed."""
    return check_loss_weights(str(text).split(","), shown=str(text))


def resolve_loss_weights(loss_weights: Sequence[float] | str | None, planned: tuple[float, float]
                         ) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """``(weights used, override)``: the requested ``(lambda_m, lambda_a)`` (default: the plans' ``planned``), and the
    same pair when it differs from the plans' (it then names the results folder), else None."""
    if loss_weights is None:
        return planned, None
    weights = parse_loss_weights(loss_weights) if isinstance(loss_weights, str) else check_loss_weights(loss_weights)
    return weights, (None if weights == planned else weights)


def check_variant(variant: str = "cvpr", code_dim: int | None = None) -> tuple[str, int | None]:
    """``(variant, code_dim)`` checked, with ``code_dim`` None when it is the variant's default (v1: 7)."""
    if variant not in CODEBRAIN_VARIANTS:
        raise InputError(f"variant must be one of {tuple(CODEBRAIN_VARIANTS)}, got {variant!r}")
    if code_dim is not None:
        if isinstance(code_dim, bool) or not isinstance(code_dim, int) or not 1 <= code_dim <= MAX_CODE_DIM:
            raise InputError(f"code dimension must be an integer in 1..{MAX_CODE_DIM} (the v1 paper's Fig. 6 "
                             f"uses 4..7), got {code_dim!r}")
        if variant == "v1" and code_dim == V1_CODE_DIM:
            code_dim = None
    return variant, code_dim


def code_levels(variant: str, code_dim: int | None, planned: Sequence[int]) -> tuple[int, ...]:
    """FSQ levels of one code: ``code_dim`` channels of 5 levels; else v1's 7 x 5; else the plans' ``planned``."""
    variant, code_dim = check_variant(variant, code_dim)
    if code_dim is not None:
        return (CODE_DIM_LEVELS,) * code_dim
    if variant == "v1":
        return (CODE_DIM_LEVELS,) * V1_CODE_DIM
    return tuple(int(level) for level in planned)


def check_seed_index(seed_index: int) -> int:
    """``seed_index`` if it is an integer >= 0 (0 = the ordinary run); InputError otherwise."""
    if isinstance(seed_index, bool) or not isinstance(seed_index, int) or seed_index < 0:
        raise InputError(f"seed index must be an integer >= 0 (0 = the ordinary run), got {seed_index!r}")
    return seed_index


def variant_name(ablation: str = "none", loss_weights: tuple[float, float] | None = None, *,
                 variant: str = "cvpr", code_dim: int | None = None, seed_index: int = 0) -> str:
    """Folder suffix of a variant: ``''``, ``'-v1'``, ``'-d5'``, ``'-v1-d5'``, ``'-vq'``, ``'-lm1-la1'``,
    ``'-v1-d5-vq-lm1-la1'``, ``'-no_fc-seed2'`` (weights = an override of the plans'; ``code_dim`` = the variant's
    default adds nothing; ``seed_index`` 0 adds nothing, so the first seed of a seeded experiment is the ordinary
    run's folder).

    The seed tag is part of the method name (``CodeBrain-no_fc-seed2__plans__config``), not a fourth ``__`` field:
    folder names keep nnU-Net's three ``__`` fields that model lookups parse.
    """
    variant, code_dim = check_variant(variant, code_dim)
    seed_index = check_seed_index(seed_index)
    suffix = "" if variant == "cvpr" else f"-{variant}"
    if code_dim is not None:
        suffix += f"-d{code_dim}"
    if ablation != "none":
        suffix += f"-{ablation}"
    if loss_weights is not None:
        suffix += f"-lm{loss_weights[0]:g}-la{loss_weights[1]:g}"
    if seed_index:
        suffix += f"-seed{seed_index}"
    return suffix


@dataclass(frozen=True)
class CodeBrainVariant:
    """Which CodeBrain was (or is to be) trained: variant, code dimension, ablation and loss weights, checked once,
    and which seed of a seeded experiment (``seed_index``; 0 = the ordinary run).

    ``loss_weights`` is what the user asked for (a pair, ``'20,5'``, or None for the plans'); whether it names the
    results folder depends on the plans (:meth:`tag`).
    """

    ablation: str = "none"
    loss_weights: tuple[float, float] | None = None
    variant: str = "cvpr"
    code_dim: int | None = None
    seed_index: int = 0

    def __post_init__(self) -> None:
        check_ablation(self.ablation)
        check_seed_index(self.seed_index)
        variant, code_dim = check_variant(self.variant, self.code_dim)
        object.__setattr__(self, "variant", variant)
        object.__setattr__(self, "code_dim", code_dim)
        if self.loss_weights is not None:
            weights = self.loss_weights
            pair = parse_loss_weights(weights) if isinstance(weights, str) else check_loss_weights(weights)
            object.__setattr__(self, "loss_weights", pair)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "CodeBrainVariant":
        """From the ``--ablation --loss-weights --variant --code-dim`` options of a command."""
        return cls(getattr(args, "ablation", "none") or "none", getattr(args, "loss_weights", None),
                   getattr(args, "variant", "cvpr") or "cvpr", getattr(args, "code_dim", None))

    def weights(self, planned: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float] | None]:
        """``(weights used, override of the plans' pair or None)``."""
        return resolve_loss_weights(self.loss_weights, planned)

    def tag(self, planned: tuple[float, float] | None = None) -> str:
        """Folder suffix (:func:`variant_name`); the loss weights count only where they differ from ``planned``."""
        override = None
        if self.loss_weights is not None:
            if planned is None:
                raise InputError("loss weights name a folder only relative to the plans: give the plans' pair")
            override = self.weights(planned)[1]
        return variant_name(self.ablation, override, variant=self.variant, code_dim=self.code_dim,
                            seed_index=self.seed_index)

    def as_options(self) -> dict[str, Any]:
        """The four switches that configure the networks and losses as keyword arguments (``run_training``,
        ``evaluate_*``); ``seed_index``, which only names a folder and offsets the seed, is passed on its own."""
        return {"ablation": self.ablation, "loss_weights": self.loss_weights, "variant": self.variant,
                "code_dim": self.code_dim}


# ---- CoPeDiT ---------------------------------------------------------------------------------------------------

PROMPT_CHOICES = ("learned", "mask")
LAYOUT_CHOICES = ("shared", "per_count")
COPEDIT_ABLATIONS: dict[str, str] = {
    "none": "learned completeness prompts, one MDiT3D for every missing pattern",
    "mask": "binary mask codes instead of the learned prompts (the paper's ablation)",
    "per_count": "one MDiT3D per missing count with the available sequences first (the paper's layout)",
    "mask-per_count": "mask codes and one MDiT3D per missing count",
}
# Only Stage II differs between CoPeDiT's options: every option reuses the plain method's Stage I.
COPEDIT_SHARED_STAGES: dict[str, tuple[int, ...]] = {name: (1,) for name in COPEDIT_ABLATIONS if name != "none"}


def copedit_ablation(prompts: str = "learned", layout: str = "shared") -> str:
    """The option name (:data:`COPEDIT_ABLATIONS`) of a prompt source and a model layout."""
    if prompts not in PROMPT_CHOICES:
        raise InputError(f"prompts must be one of {PROMPT_CHOICES}, got {prompts!r}")
    if layout not in LAYOUT_CHOICES:
        raise InputError(f"layout must be one of {LAYOUT_CHOICES}, got {layout!r}")
    parts = (["mask"] if prompts == "mask" else []) + (["per_count"] if layout == "per_count" else [])
    return "-".join(parts) or "none"


def ablation_switches(ablation: str) -> tuple[str, str]:
    """``(prompts, layout)`` of a CoPeDiT option name; InputError for an unknown one."""
    if ablation not in COPEDIT_ABLATIONS:
        raise InputError(f"CoPeDiT option must be one of {tuple(COPEDIT_ABLATIONS)}, got {ablation!r}")
    return ("mask" if "mask" in ablation else "learned"), ("per_count" if "per_count" in ablation else "shared")


def copedit_options_ablation(options: Mapping[str, Any]) -> str:
    """The CoPeDiT option name of an imputer's ``options`` (``prompts``, ``layout``)."""
    return copedit_ablation(options.get("prompts", "learned"), options.get("layout", "shared"))
