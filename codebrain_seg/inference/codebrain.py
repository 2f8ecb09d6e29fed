"""The CodeBrain predictor: any subset of a case's sequences in, the missing ones out, on the case's own grid.

Wu et al., "Virtual Full-stack Scanning of Brain MRI via Imputing Any Quantised Code", CVPR 2026: the Stage II
prior encoder predicts the quantised full-stack code of every slice from the zero-filled stack, and the Stage I
decoder turns it, with the common features F_c of the same zero-filled stack, into all sequences.

What happens to a case (``CodeBrainPredictor.impute_arrays``):

1. **Preprocessing as in training** (
   ``planners.slice_preprocessing.prepare_case``): closest canonical RAS voxel order; brain mask = voxels non-zero in
   any *given* sequence; each given sequence divided by its own 99.5th brain percentile and clipped to [0, 1];
   missing ones zero; slices along the planned axis over the brain's extent; the planned in-plane crop centred on
   the brain (enlarged to the next multiple of 8 if this brain is wider than every training brain).
2. **Inference on every slice**, ``batch_size`` slices at a time: levels = E_prior's ordinal logits decoded to
   expected levels (``code_decoding='expected'``, the default; ``'count'`` is the reference's count of positive
   logits), codes = FSQ levels -> [-1, 1], reconstruction = D(codes, E_c(zero-filled stack)); optionally the mean
   over in-plane flips (``mirroring``, :mod:`codebrain_seg.inference.slice_predictor`).
3. **Back to the original grid** with ``planners.slice_preprocessing.restore_to_original``: zero outside the field of
   view (slices without brain, voxels outside the crop) and outside the brain mask.

The intensity scale of an imputed sequence is :mod:`codebrain_seg.inference.slice_predictor`'s; the confidence
map is :mod:`codebrain_seg.inference.confidence`'s.

**The v1 variant** (per-modality codes, ``network_config.variant == 'v1'``): Stage II predicts the codes of all
sequences; each missing sequence is decoded from its own predicted code with F_c of one *given* sequence, chosen
per slice by ``source_rule``: ``'random'`` (default, the v1 paper's setting; a generator seeded with
``source_seed`` when the predictor is built, so a run is reproducible) or ``'relevant'`` (the v1 paper's "most
relevant source": the given sequence with the highest Stage-I validation PSNR for reconstructing that target, the
``source_relevance`` table the checkpoint records). Its confidence averages the code channels of the missing
sequences only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from codebrain_seg.checkpoints import (
    check_checkpoint_name,
    check_trained_configuration,
    load_checkpoint,
)
from codebrain_seg.device import preferred_memory_format
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.inference.confidence import ordinal_confidence
from codebrain_seg.inference.learned import LearnedImputer
from codebrain_seg.inference.model_folders import model_plans, variant_fold_dir
from codebrain_seg.inference.request import ImputationContext
from codebrain_seg.inference.slice_predictor import SlicePredictor, network_input
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder, StageOneModel
from codebrain_seg.networks.codebrain import SOURCE_RULES, check_code_decoding
from codebrain_seg.variants import CodeBrainVariant


class CodeBrainPredictor(SlicePredictor):
    """Trained Stage I + Stage II networks with the plans they were trained with.

    Args:
        stage_one: the Stage I generator (its posterior encoder is only used for oracle code maps).
        prior_encoder: the Stage II prior encoder (grading head; a 'cls' head imputes but gives no confidence).
        plans: the plans dict the model was trained with.
        configuration: name of the plans configuration.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        batch_size: slices per forward pass (default: the configuration's Stage II batch size).
        model_info: provenance written to sidecars (folder, checkpoint, ...).
        source_rule: v1 only: ``'random'`` or ``'relevant'`` source of F_c (module docstring).
        source_relevance: v1 only: ``{source: {target: PSNR}}`` recorded by Stage I (needed for ``'relevant'``).
        source_seed: v1 only: seed of the ``'random'`` source choices.
        precision: ``'auto'`` (bf16 where the device computes it natively), ``'fp32'`` or ``'bf16'``.
        code_decoding: ``'expected'`` (default) or ``'count'`` (:data:`CODE_DECODINGS`).
        mirroring: average over the in-plane flips (about 4x the seconds).
    """

    uses_availability = True

    def __init__(self, stage_one: StageOneModel, prior_encoder: PriorEncoder, plans: dict[str, Any],
                 configuration: str, device: str | torch.device = "cpu", batch_size: int | None = None,
                 model_info: dict[str, Any] | None = None, source_rule: str = "random",
                 source_relevance: dict[str, dict[str, float]] | None = None, source_seed: int = 0,
                 precision: str = "auto", code_decoding: str = "expected", mirroring: bool = False) -> None:
        super().__init__(plans, configuration, device, batch_size, model_info, precision, mirroring)
        self.code_decoding = check_code_decoding(code_decoding)
        self.model_info["code_decoding"] = self.code_decoding
        self.stage_one = stage_one.to(self.device, memory_format=preferred_memory_format(self.device)).eval()
        self.prior_encoder = prior_encoder.to(self.device, memory_format=preferred_memory_format(self.device)).eval()
        self.config = prior_encoder.config
        self.fsq_levels = list(self.config.fsq_levels)
        self.supports_confidence = self.config.head == "grading"
        if source_rule not in SOURCE_RULES:
            raise InputError(f"source rule must be one of {SOURCE_RULES}, got {source_rule!r}")
        self.source_rule = source_rule
        self.source_relevance = source_relevance
        self.relevance: Tensor | None = None  # (C, C) source x target table of the 'relevant' rule
        if self.config.variant == "v1":
            if source_rule == "relevant":
                if not source_relevance:
                    raise InputError("source rule 'relevant' needs the source x target table that Stage I validation "
                                     "of the v1 variant records (source_relevance); this model has none")
                names = self.channel_names
                self.relevance = torch.tensor([[float(source_relevance.get(s, {}).get(t, float("nan")))
                                                 for t in names] for s in names])
            self.model_info.update(source_rule=source_rule, source_seed=source_seed)
        self._sources = torch.Generator().manual_seed(int(source_seed))

    @classmethod
    def from_results(cls, dataset: str | int, fold: int | str, configuration: str = "2d", device: str = "cpu",
                     checkpoint: str = "final", batch_size: int | None = None, *, ablation: str = "none",
                     loss_weights: Sequence[float] | str | None = None, variant: str = "cvpr",
                     code_dim: int | None = None, source_rule: str = "random") -> "CodeBrainPredictor":
        """Load a trained model from ``$codebrain_results/DatasetXXX_Name/CodeBrain[-...]__<plans>__<config>/fold_F``.

        ``ablation``, ``loss_weights``, ``variant``, ``code_dim`` select the variant's folder exactly as
        ``codebrain_train`` named it (:func:`variant_fold_dir`); ``source_rule`` applies to v1 models.

        Raises:
            FileNotFoundError: the model folder has no finished Stage II (or no Stage I) checkpoint.
        """
        fold_dir = variant_fold_dir(dataset, fold, configuration,
                                    CodeBrainVariant(ablation, loss_weights, variant, code_dim))  # type: ignore[arg-type]
        return load_predictor_from_folder(fold_dir, configuration, device, checkpoint, batch_size, source_rule)

    inference_options = (*SlicePredictor.inference_options, "code_decoding")

    def apply_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The shared options plus ``code_decoding`` (expected | count)."""
        self.code_decoding = check_code_decoding(options.get("code_decoding", "expected"))
        return super().apply_options(options)

    # -- slices --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_slices(self, masked: np.ndarray | Tensor, available: Sequence[bool] | None = None
                       ) -> dict[str, Tensor]:
        """Run Stage II + the Stage I decoder on zero-filled slices.

        Args:
            masked: ``(B, C, H, W)`` normalised slices, missing channels zero; H, W multiples of 8.
            available: C booleans (given sequences); default: the channels of each slice that are not all zero.
                Only the v1 variant uses it (to pick F_c sources and the missing codes of the confidence).

        Returns:
            ``{"reconstruction": (B, C, H, W) unclamped (v1: missing channels only, given ones 0), "levels": Stage-II
            targets as the reference decodes them, whatever ``code_decoding`` decoded the reconstruction from (FSQ
            levels ``(B, num_codes * d, H/8, W/8)`` int64; VQ indices ``(B, num_codes, ...)``; continuous
            codes), "confidence": (B, H/8, W/8)}`` on the CPU (confidence only with the grading head).
        """
        x = network_input(masked, self.device)
        given = None
        if available is not None:
            given = torch.as_tensor(np.asarray(available, dtype=bool), device=self.device)[None].expand(len(x), -1)
        elif self.config.variant == "v1":
            given = x.flatten(2).ne(0).any(dim=2)
            given[~given.any(dim=1)] = True  # a blank slice: any channel may serve as the source
        logits = self.prior_encoder(x)
        levels = self.prior_encoder.logits_to_levels(logits)
        decoded = levels if self.code_decoding == "count" else self.prior_encoder.logits_to_levels(logits, "expected")
        codes = self.stage_one.levels_to_codes(decoded)
        reconstruction = self.stage_one.impute_from_codes(codes, x, given, self.source_rule, self.relevance,
                                                          self._sources)
        result = {"reconstruction": reconstruction.float().cpu(), "levels": levels.cpu()}
        if self.config.head == "grading":
            per_channel = ordinal_confidence(logits, self.config.target_levels, per_channel=True)
            if self.config.variant == "v1":
                # The codes that are decoded: those of the missing sequences of each slice.
                per_code = per_channel.unflatten(1, (self.config.num_codes, -1)).mean(dim=2)
                weights = (~given).float()[:, :, None, None]
                confidence = (per_code * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
            else:
                confidence = per_channel.mean(dim=1)
            result["confidence"] = confidence.clamp(0.0, 1.0).cpu()
        return result

    @torch.no_grad()
    def oracle_levels(self, full: np.ndarray | Tensor) -> Tensor:
        """Stage I posterior code levels (layout of ``predict_slices``' ``levels``) of complete slices
        ``(B, C, H, W)`` (an upper bound)."""
        x = network_input(full, self.device)
        return self.stage_one.codes_to_levels(self.stage_one.encode_codes(x)).cpu()

    def code_layout(self) -> dict[str, Any]:
        """How to read ``levels`` (for figures): quantiser, classes per target channel, and one named group of
        target channels per code (cvpr: the full stack; v1: each sequence)."""
        classes = self.config.class_counts
        per_code = len(classes) // self.config.num_codes if classes else self.config.code_channels
        names = self.channel_names if self.config.variant == "v1" else ["full stack"]
        return {"quantizer": self.config.quantizer, "class_counts": list(self.config.class_counts),
                "variant": self.config.variant, "groups": {name: list(range(i * per_code, (i + 1) * per_code))
                                                           for i, name in enumerate(names)}}


def _stage_one_state(stage2: dict[str, Any], fold_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stage I generator weights and architecture for a Stage II checkpoint.

    ``best`` / ``final`` Stage II checkpoints carry the frozen generator; ``latest`` ones point to the Stage I
    checkpoint they were trained on (looked up beside the fold if that path moved).
    """
    frozen = stage2.get("frozen_networks", {})
    if "generator" in frozen:
        return frozen["generator"], stage2["network_config"]
    candidates = [Path(stage2["stage1_checkpoint"])] if stage2.get("stage1_checkpoint") else []
    candidates.append(fold_dir / "stage1" / "checkpoint_final.pth")
    for path in candidates:
        if path.is_file():
            stage1 = load_checkpoint(path, keys=("networks.generator", "network_config"),
                                     what="CodeBrain Stage I checkpoint")
            return stage1["networks"]["generator"], stage1["network_config"]
    raise MissingFileError(f"the Stage I checkpoint of {fold_dir} is missing (looked for "
                            f"{', '.join(str(p) for p in candidates)})")


def load_predictor_from_folder(fold_dir: Path, configuration: str | None = None, device: str = "cpu",
                               checkpoint: str = "final", batch_size: int | None = None,
                               source_rule: str = "random", precision: str = "auto") -> CodeBrainPredictor:
    """Load Stage I + Stage II from a ``fold_F`` folder written by ``codebrain_train``.

    The checkpoints' ``network_config`` rebuilds whatever variant was trained (quantiser, head, cvpr / v1 layout, code
    dimension); ``source_rule`` (``'random'`` | ``'relevant'``) chooses the F_c sources of a v1 model.

    Layout (``trainers``): ``fold_F/stage1/checkpoint_{latest,best,final}.pth`` and ``fold_F/stage2/...``; a
    Stage II checkpoint holds the prior encoder (``networks.prior_encoder``), its ``network_config``, the plans and
    configuration it was trained with, and (best / final) the frozen Stage I generator.

    Raises:
        ValueError: unknown checkpoint name, or a checkpoint of another configuration or stage.
        FileNotFoundError: no such folder, or no finished Stage II in it.
    """
    check_checkpoint_name(checkpoint)
    fold_dir = Path(fold_dir)
    if not fold_dir.is_dir():
        raise MissingFileError(f"no trained model: {fold_dir} does not exist (train it with codebrain_train)")
    path = fold_dir / "stage2" / f"checkpoint_{checkpoint}.pth"
    if not path.is_file():
        stage1_done = (fold_dir / "stage1" / "checkpoint_final.pth").is_file()
        raise MissingFileError(
            f"{fold_dir} has no finished Stage II ({path.relative_to(fold_dir)} is missing; Stage I is "
            f"{'finished' if stage1_done else 'not finished either'}): imputation needs both stages, train them "
            f"with codebrain_train --stage {'2' if stage1_done else 'all'}")
    state = load_checkpoint(path, expect={"stage": 2}, keys=("networks.prior_encoder", "network_config"),
                            what="CodeBrain Stage II checkpoint")
    trained_configuration = check_trained_configuration(state, path, configuration)
    config = CodeBrainConfig.from_dict(state["network_config"])
    prior_encoder = PriorEncoder(config)
    prior_encoder.load_state_dict(state["networks"]["prior_encoder"])
    generator_weights, generator_config = _stage_one_state(state, fold_dir)
    stage_one = StageOneModel(CodeBrainConfig.from_dict(generator_config))
    stage_one.load_state_dict(generator_weights)
    plans = state.get("plans") or model_plans(fold_dir)
    identity = state.get("identity", {})
    info = {"model_folder": str(fold_dir), "checkpoint": f"stage2/{path.name}", "method": state.get("method"),
            "stage2_iteration": state.get("iteration"), "stage1_iteration": state.get("stage1_iteration"),
            "stage2_best_score": state.get("best_metric"), "network_config": config.to_dict(),
            "training_precision": state.get("precision"),
            "variant": config.variant, **{key: identity[key] for key in ("ablation", "code_dim") if key in identity}}
    return CodeBrainPredictor(stage_one, prior_encoder, plans, trained_configuration, device,
                              batch_size, info, source_rule=source_rule,
                              source_relevance=state.get("source_relevance"), precision=precision)


class CodeBrainImputer(LearnedImputer):
    """The ``codebrain`` entry of the imputation registry (``codebrain_seg.imputers``).

    Built from an :class:`ImputationContext`: the model is loaded from ``context.model_dir`` (a ``fold_F``
    folder) when given, else from ``$codebrain_results`` by dataset, fold and configuration. ``context.options``
    may hold ``checkpoint`` (final|best|latest), ``batch_size``, ``source_rule`` (v1), ``precision``, ``mirroring``
    and ``code_decoding`` (:meth:`CodeBrainPredictor.apply_options`). The context's
    ``ablation``, ``loss_weights``, ``variant`` and ``code_dim`` select the variant's folder
    (:func:`variant_fold_dir`). Arrays are taken in RAS voxel order unless ``affine`` is passed to :meth:`impute`.
    """

    name = "codebrain"
    trainer_folder = "CodeBrain"

    def fold_dir(self, context: ImputationContext) -> Path:
        """The folder of the context's variant (``CodeBrain[-v1][-dD][-ablation][-lmM-laA]__...``)."""
        return variant_fold_dir(context.dataset, context.fold, context.configuration, context.codebrain)

    @staticmethod
    def load(fold_dir: Path, configuration: str, device: str, checkpoint: str,
             batch_size: int | None, source_rule: str = "random") -> SlicePredictor:
        """Stage I + Stage II (:func:`load_predictor_from_folder`)."""
        return load_predictor_from_folder(fold_dir, configuration, device, checkpoint, batch_size, source_rule)

