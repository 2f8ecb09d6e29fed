"""The CodeBrain predictor: any subset of a case's sequences in, the missing ones out, on the case's own grid.

Wu et al., "Virtual Full-stack Scanning of Brain MRI via Imputing Any Quantised Code", CVPR 2026: the Stage II
prior encoder predicts the quantised full-stack code of every slice from the zero-filled stack, and the Stage I
decoder turns it, with the common features F_c of the same zero-filled stack, into all sequences.

What happens to a case (``CodeBrainPredictor.impute_arrays``):

1. **Preprocessing as in training** (:func:`prepare_case`, the in-memory twin of
   ``planners.preprocessing.preprocess_case``): closest canonical RAS voxel order; brain mask = voxels non-zero in
   any *given* sequence; each given sequence divided by its own 99.5th brain percentile and clipped to [0, 1];
   missing ones zero; slices along the planned axis over the brain's extent; the planned in-plane crop centred on
   the brain (enlarged to the next multiple of 8 if this brain is wider than every training brain).
2. **Inference on every slice**, ``batch_size`` slices at a time: levels = ordinal count decode of E_prior's
   logits, codes = FSQ levels -> [-1, 1], reconstruction = D(codes, E_c(zero-filled stack)).
3. **Back to the original grid** with ``planners.preprocessing.restore_to_original``: zero outside the field of
   view (slices without brain, voxels outside the crop) and outside the brain mask.

**Intensity scale of an imputed sequence.** The network works in [0, 1] where 1 is the sequence's own 99.5th
brain percentile; for a missing sequence that percentile is unknown by definition (the given sequences' scales
say nothing about it: scanners scale each sequence independently). The output is therefore clamped to [0, 1] and
multiplied by the training set's median 99.5th brain percentile of that sequence
(``plans["intensity_reference"][name]["median_p99_5"]``): an imputed sequence looks like a typical training case
of that sequence. Given sequences are returned unchanged.

**The v1 variant** (per-modality codes, ``network_config.variant == 'v1'``): Stage II predicts the codes of all
sequences; each missing sequence is decoded from its own predicted code with F_c of one *given* sequence, chosen
per slice by ``source_rule``: ``'random'`` (default, the v1 paper's setting; a generator seeded with
``source_seed`` when the predictor is built, so a run is reproducible) or ``'relevant'`` (the v1 paper's "most
relevant source": the given sequence with the highest Stage-I validation PSNR for reconstructing that target, the
``source_relevance`` table the checkpoint records). Its confidence averages the code channels of the missing
sequences only.

**Confidence.** For every code cell (8 x 8 pixels) and code channel ``i`` with ``L_i`` levels, Stage II gives
``L_i - 1`` sigmoid probabilities ``p_t = P(k_i > t)``; the level is decoded by counting ``p_t > 0.5``. The
expected number of wrong threshold decisions is ``u_i = sum_t min(p_t, 1 - p_t)`` (= the expected absolute level
error ``E|k_i - k_hat_i|`` when the thresholds are consistent, an upper bound otherwise). Confidence per cell is
``1 - mean_i u_i / ((L_i - 1) / 2)``: 1 when every probability is 0 or 1, 0 when all are 0.5. It is up-sampled
bilinearly to the pixel grid and mapped back like the images; 0 outside the brain and the field of view.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codebrain_seg.geometry import to_canonical
from codebrain_seg.imputers import ImputationContext, check_request
from codebrain_seg.networks import CodeBrainConfig, Decoder, Encoder, PriorEncoder, StageOneModel
from codebrain_seg.networks.codebrain import SOURCE_RULES
from planners.fingerprint import bounding_box, brain_mask
from planners.preprocessing import _extract, crop_window, normalised_stack, restore_to_original

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("final", "best", "latest")
INTENSITY_SCALE = ("network output clamped to [0, 1] times the training set's median 99.5th brain percentile of the "
                   "sequence (plans intensity_reference median_p99_5)")
CONFIDENCE_DEFINITION = ("per 8x8 code cell: 1 - mean over the d code channels of sum_t min(p_t, 1 - p_t) / "
                         "((L_i - 1) / 2), p_t = sigmoid of Stage II ordinal logit t (P(level > t)); the sum is the "
                         "expected number of wrong threshold decisions (= expected absolute level error when the "
                         "thresholds are consistent); 1 = certain, 0 = every probability 0.5; bilinearly up-sampled "
                         "to pixels, 0 outside the brain and the field of view")


# ---- preprocessing in memory -----------------------------------------------------------------------------


def enlarged_crop(box: list[list[int]], planned: Sequence[int], in_plane: Sequence[int], multiple: int) -> list[int]:
    """The planned crop, grown per axis to the next multiple of ``multiple`` that holds this brain's extent."""
    crop = []
    for axis, size in zip(in_plane, planned):
        extent = box[axis][1] - box[axis][0]
        crop.append(int(size) if extent <= size else int(math.ceil(extent / multiple) * multiple))
    return crop


def prepare_case(images: np.ndarray, available: Sequence[bool], affine: np.ndarray, plans: dict[str, Any],
                 configuration: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess a case in memory exactly as training did (see module docstring, step 1).

    Args:
        images: ``(C, X, Y, Z)`` in the file's voxel order; missing channels are ignored (may be anything).
        available: C booleans, True = the sequence is given.
        affine: ``(4, 4)`` voxel-to-world matrix of the files.
        plans: the plans dict (``normalization.upper_percentile``).
        configuration: one configuration of the plans (slicing axis, crop, down-samplings).

    Returns:
        ``(stack (C, S, H, W) float32 in [0, 1] with missing channels 0, brain (S, H, W) bool, properties)``;
        ``properties`` has the keys ``restore_to_original`` needs, ``normalization_upper`` 0 for missing channels.
    """
    available = np.asarray(available, dtype=bool)
    canonical = to_canonical(np.asarray(images, dtype=np.float32), affine)
    mask = brain_mask([canonical[c] for c in np.flatnonzero(available)])
    if not mask.any():
        raise ValueError("the given sequences are zero everywhere: no brain to impute")
    box = bounding_box(mask)
    axis = int(configuration["slicing_axis"])
    in_plane = [a for a in range(3) if a != axis]
    multiple = 2 ** int(configuration.get("downsamplings", 3))
    crop = enlarged_crop(box, configuration["crop_size"], in_plane, multiple)
    if list(crop) != list(configuration["crop_size"]):
        logger.warning("brain extent %s exceeds the planned crop %s: using %s (not seen in training)",
                       [box[a][1] - box[a][0] for a in in_plane], configuration["crop_size"], crop)
    starts = crop_window(box, crop, in_plane)
    upper_percentile = plans["normalization"]["upper_percentile"]
    normalised, uppers = normalised_stack(canonical, available, mask, upper_percentile)
    order = [axis] + in_plane
    s0, s1 = box[axis]
    stack = normalised.transpose([0] + [a + 1 for a in order])[:, s0:s1]
    stack = _extract(stack, starts, crop).astype(np.float32)
    brain = _extract(mask.transpose(order)[s0:s1], starts, crop)
    properties = {
        "original_shape": list(images.shape[1:]),
        "original_affine": np.asarray(affine, dtype=np.float64).tolist(),
        "canonical_shape": list(canonical.shape[1:]),
        "slicing_axis": axis,
        "axis_order": order,
        "slice_range": [int(s0), int(s1)],
        "crop_start": starts,
        "crop_size": crop,
        "normalization_upper": uppers,
        "upper_percentile": upper_percentile,
        "preprocessed_shape": list(stack.shape),
    }
    return stack, brain, properties


def to_preprocessed_space(volume: np.ndarray, properties: dict[str, Any]) -> np.ndarray:
    """Resample nothing, only re-index: ``(..., X, Y, Z)`` on the original grid -> ``(..., S, H, W)`` crop.

    The forward twin of ``restore_to_original`` (without normalisation) for arrays on the case's grid, e.g. a
    prediction or a label map.
    """
    volume = np.asarray(volume)
    lead = volume.ndim - 3
    canonical = to_canonical(volume, np.asarray(properties["original_affine"]))
    order = [lead + a for a in properties["axis_order"]]
    s0, s1 = properties["slice_range"]
    moved = canonical.transpose(list(range(lead)) + order)[(slice(None),) * lead + (slice(s0, s1),)]
    return _extract(moved, properties["crop_start"], properties["crop_size"])


def middle_slices(num_slices: int, count: int) -> np.ndarray:
    """Indices of the ``count`` middle slices of ``num_slices`` (all of them when there are fewer)."""
    if count >= num_slices:
        return np.arange(num_slices)
    start = (num_slices - count) // 2
    return np.arange(start, start + count)


# ---- confidence ------------------------------------------------------------------------------------------


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
        raise ValueError(f"grading logits must be (B, {sum(level - 1 for level in fsq_levels)}, h, w), "
                         f"got {tuple(logits.shape)}")
    probabilities = torch.sigmoid(logits.float())
    wrong = torch.minimum(probabilities, 1.0 - probabilities)
    spreads = [group.sum(dim=1) / ((level - 1) / 2.0)
               for group, level in zip(torch.split(wrong, [level - 1 for level in fsq_levels], dim=1), fsq_levels)]
    spread = torch.stack(spreads, dim=1)
    return (1.0 - (spread if per_channel else spread.mean(dim=1))).clamp(0.0, 1.0)


# ---- the predictor ---------------------------------------------------------------------------------------


def _channels_last(slices: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """``(B, C, H, W)`` float32 on ``device`` in channels-last memory order, as in training: the networks are
    kept channels-last too, so oneDNN runs every convolution without reordering (about 1.5x faster on a CPU than
    the default order; same results up to float rounding)."""
    return torch.as_tensor(slices, dtype=torch.float32).to(device).contiguous(memory_format=torch.channels_last)


class SlicePredictor:
    """What every slice-wise learned imputer shares: preprocessing as in training, batched inference, mapping back.

    Subclasses implement :meth:`predict_slices`. Args as in :class:`CodeBrainPredictor`.
    """

    supports_confidence = False
    # Whether predict_slices takes the availability of the batch (``available=``); models that infer nothing from it
    # keep the one-argument signature.
    uses_availability = False

    def __init__(self, plans: dict[str, Any], configuration: str, device: str | torch.device = "cpu",
                 batch_size: int | None = None, model_info: dict[str, Any] | None = None) -> None:
        if configuration not in plans["configurations"]:
            raise KeyError(f"configuration {configuration!r} is not in the plans; available: "
                           f"{', '.join(plans['configurations'])}")
        self.plans = plans
        self.configuration_name = configuration
        self.configuration = plans["configurations"][configuration]
        self.channel_names = list(plans["channel_names"])
        self.device = torch.device(device)
        optimisation = self.configuration.get("optimisation", {})
        default_batch = optimisation.get("stage2", optimisation.get("stage1", {})).get("batch_size", 8)
        self.batch_size = int(batch_size or default_batch)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        reference = plans["intensity_reference"]
        self.reference_upper = np.array([reference[name]["median_p99_5"] for name in self.channel_names],
                                        dtype=np.float32)
        self.model_info = dict(model_info or {})

    @property
    def num_channels(self) -> int:
        """Number of sequences C the model knows."""
        return len(self.channel_names)

    @property
    def intensity_scale(self) -> str:
        """How imputed intensities are scaled (see module docstring)."""
        return INTENSITY_SCALE

    def predict_slices(self, masked: np.ndarray | Tensor) -> dict[str, Tensor]:
        """``(B, C, H, W)`` zero-filled normalised slices -> ``{"reconstruction": (B, C, H, W), ...}`` on the CPU."""
        raise NotImplementedError

    def predict_stack(self, stack: np.ndarray, with_confidence: bool = False, available: Sequence[bool] | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """Every slice of a zero-filled ``(C, S, H, W)`` stack -> ``(reconstruction (C, S, H, W) in [0, 1],
        confidence (S, H, W) or None)``, ``batch_size`` slices at a time; ``available`` (C booleans) is passed on
        to models that use it (:attr:`uses_availability`)."""
        if with_confidence and not self.supports_confidence:
            raise ValueError(f"{type(self).__name__} gives no confidence map (it needs CodeBrain's ordinal "
                             "'grading' Stage II head)")
        channels, num_slices, height, width = stack.shape
        output = np.zeros_like(stack, dtype=np.float32)
        confidence = np.zeros((num_slices, height, width), np.float32) if with_confidence else None
        for start in range(0, num_slices, self.batch_size):
            batch = np.ascontiguousarray(stack[:, start:start + self.batch_size].transpose(1, 0, 2, 3))
            passed = {"available": available} if self.uses_availability and available is not None else {}
            result = self.predict_slices(batch, **passed)
            output[:, start:start + len(batch)] = result["reconstruction"].clamp(0, 1).numpy().transpose(1, 0, 2, 3)
            if confidence is not None:
                upsampled = F.interpolate(result["confidence"][:, None], size=(height, width), mode="bilinear",
                                          align_corners=False)
                confidence[start:start + len(batch)] = upsampled[:, 0].numpy()
        return output, confidence

    # -- whole cases ---------------------------------------------------------------------------------------

    def _impute(self, images: np.ndarray, available: Sequence[bool], affine: np.ndarray | None,
                with_confidence: bool) -> tuple[np.ndarray, np.ndarray | None]:
        available = check_request(np.asarray(images), available, self.num_channels)
        images = np.asarray(images, dtype=np.float32)
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        stack, brain, properties = prepare_case(images, available, affine, self.plans, self.configuration)
        stack[~available] = 0.0
        reconstruction, confidence = self.predict_stack(stack, with_confidence, available)
        reconstruction *= brain[None]
        properties = dict(properties, normalization_upper=self.reference_upper.tolist())
        restored = restore_to_original(reconstruction, properties, denormalise=True)
        output = images.copy()
        output[~available] = restored[~available]
        if confidence is not None:
            confidence *= brain
            confidence = restore_to_original(confidence[None], properties, denormalise=False)[0]
        return output, confidence

    def impute_normalised(self, stack: np.ndarray, available: Sequence[bool]) -> np.ndarray:
        """Impute on already preprocessed slices (the reference's test setting, used by the paper protocol).

        Args:
            stack: ``(C, S, H, W)`` normalised slices in [0, 1] (missing channels are zeroed here).
            available: C booleans.

        Returns:
            ``(C, S, H, W)``: given channels unchanged, missing ones the network output clamped to [0, 1], zero
            where no given channel is non-zero (outside the brain).
        """
        available = check_request(np.asarray(stack), available, self.num_channels)
        stack = np.asarray(stack, dtype=np.float32).copy()
        stack[~available] = 0.0
        reconstruction, _ = self.predict_stack(stack, available=available)
        reconstruction *= (stack[available] != 0).any(axis=0)[None]
        stack[~available] = reconstruction[~available]
        return stack

    def impute_arrays(self, images: np.ndarray, available: Sequence[bool], affine: np.ndarray | None = None
                      ) -> np.ndarray:
        """Impute the missing sequences of one case.

        Args:
            images: ``(C, X, Y, Z)`` in the files' voxel order and intensities; missing channels are ignored.
            available: C booleans, True = given.
            affine: ``(4, 4)`` voxel-to-world matrix of the files (default: identity, i.e. the array is already in
                RAS voxel order).

        Returns:
            ``(C, X, Y, Z)`` float32: given channels unchanged, missing ones imputed in the documented intensity
            scale (:attr:`intensity_scale`), zero outside the brain and the field of view.
        """
        return self._impute(images, available, affine, with_confidence=False)[0]

    def impute_with_confidence(self, images: np.ndarray, available: Sequence[bool],
                               affine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`impute_arrays` plus the confidence map ``(X, Y, Z)`` in [0, 1] (module docstring)."""
        output, confidence = self._impute(images, available, affine, with_confidence=True)
        return output, confidence  # type: ignore[return-value]  (not None with confidence requested)


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
    """

    uses_availability = True

    def __init__(self, stage_one: StageOneModel, prior_encoder: PriorEncoder, plans: dict[str, Any],
                 configuration: str, device: str | torch.device = "cpu", batch_size: int | None = None,
                 model_info: dict[str, Any] | None = None, source_rule: str = "random",
                 source_relevance: dict[str, dict[str, float]] | None = None, source_seed: int = 0) -> None:
        super().__init__(plans, configuration, device, batch_size, model_info)
        self.stage_one = stage_one.to(self.device, memory_format=torch.channels_last).eval()
        self.prior_encoder = prior_encoder.to(self.device, memory_format=torch.channels_last).eval()
        self.config = prior_encoder.config
        self.fsq_levels = list(self.config.fsq_levels)
        self.supports_confidence = self.config.head == "grading"
        if source_rule not in SOURCE_RULES:
            raise ValueError(f"source rule must be one of {SOURCE_RULES}, got {source_rule!r}")
        self.source_rule = source_rule
        self.source_relevance = source_relevance
        self.relevance: Tensor | None = None  # (C, C) source x target table of the 'relevant' rule
        if self.config.variant == "v1":
            if source_rule == "relevant":
                if not source_relevance:
                    raise ValueError("source rule 'relevant' needs the source x target table that Stage I validation "
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
        fold_dir = variant_fold_dir(dataset, fold, configuration, ablation=ablation, loss_weights=loss_weights,
                                    variant=variant, code_dim=code_dim)
        return load_predictor_from_folder(fold_dir, configuration, device, checkpoint, batch_size, source_rule)

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
            targets (FSQ levels ``(B, num_codes * d, H/8, W/8)`` int64; VQ indices ``(B, num_codes, ...)``; continuous
            codes), "confidence": (B, H/8, W/8)}`` on the CPU (confidence only with the grading head).
        """
        x = _channels_last(masked, self.device)
        given = None
        if available is not None:
            given = torch.as_tensor(np.asarray(available, dtype=bool), device=self.device)[None].expand(len(x), -1)
        elif self.config.variant == "v1":
            given = x.flatten(2).ne(0).any(dim=2)
            given[~given.any(dim=1)] = True  # a blank slice: any channel may serve as the source
        logits = self.prior_encoder(x)
        levels = self.prior_encoder.logits_to_levels(logits)
        codes = self.stage_one.levels_to_codes(levels)
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
        x = _channels_last(full, self.device)
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



# ---- the direct-regression baseline ------------------------------------------------------------------------


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


class RegressionPredictor(SlicePredictor):
    """A trained :class:`RegressionNetwork` with its plans (same preprocessing, scale and geometry as CodeBrain)."""

    def __init__(self, network: RegressionNetwork, plans: dict[str, Any], configuration: str,
                 device: str | torch.device = "cpu", batch_size: int | None = None,
                 model_info: dict[str, Any] | None = None) -> None:
        super().__init__(plans, configuration, device, batch_size, model_info)
        self.network = network.to(self.device, memory_format=torch.channels_last).eval()

    @torch.no_grad()
    def predict_slices(self, masked: np.ndarray | Tensor) -> dict[str, Tensor]:
        """``{"reconstruction": (B, C, H, W)}`` (unclamped, on the CPU) from zero-filled slices."""
        x = _channels_last(masked, self.device)
        return {"reconstruction": self.network(x).float().cpu()}


def model_fingerprint(fold_dir: Path, checkpoint: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What a learned method's imputations depend on: model folder, checkpoint files (size, mtime), settings.

    Caches of imputed volumes (segmentation evaluation) compare it to know when a retrained model makes them stale.
    """
    stamps = {path.parent.name: [path.stat().st_size, path.stat().st_mtime_ns]
              for path in sorted(fold_dir.glob(f"stage*/checkpoint_{checkpoint}.pth"))}
    return {"model": str(fold_dir.resolve()), "checkpoint": checkpoint, **settings, "checkpoints": stamps}


class _LearnedImputer:
    """Registry adapter of a :class:`SlicePredictor` loaded from the results folder (see subclasses)."""

    name = ""
    trainer_folder = ""

    def __init__(self, context: ImputationContext) -> None:
        options = context.options
        fold_dir = Path(context.model_dir) if context.model_dir is not None else self.fold_dir(context)
        checkpoint, source_rule = options.get("checkpoint", "final"), options.get("source_rule", "random")
        self.predictor = self.load(fold_dir, context.configuration, context.device, checkpoint,
                                   options.get("batch_size"), source_rule)
        self.intensity_scale = self.predictor.intensity_scale
        self._model = (fold_dir, checkpoint, {"source_rule": source_rule})

    def fingerprint(self) -> dict[str, Any]:
        """See :func:`model_fingerprint`."""
        return model_fingerprint(*self._model)

    def fold_dir(self, context: ImputationContext) -> Path:
        """The model's ``fold_F`` folder in ``$codebrain_results`` for the context's dataset, fold, configuration."""
        return model_fold_dir(context.dataset, context.fold, context.configuration, self.trainer_folder)

    @staticmethod
    def load(fold_dir: Path, configuration: str, device: str, checkpoint: str,
             batch_size: int | None, source_rule: str = "random") -> SlicePredictor:
        """Load the predictor of a ``fold_F`` folder."""
        raise NotImplementedError

    def impute(self, images: np.ndarray, available: Sequence[bool], affine: np.ndarray | None = None) -> np.ndarray:
        """See :meth:`SlicePredictor.impute_arrays` (arrays in RAS voxel order unless ``affine`` is given)."""
        return self.predictor.impute_arrays(images, available, affine)

    def impute_normalised(self, stack: np.ndarray, available: Sequence[bool]) -> np.ndarray:
        """See :meth:`SlicePredictor.impute_normalised`."""
        return self.predictor.impute_normalised(stack, available)


class CodeBrainImputer(_LearnedImputer):
    """The ``codebrain`` entry of the imputation registry (``codebrain_seg.imputers``).

    Built from an :class:`ImputationContext`: the model is loaded from ``context.model_dir`` (a ``fold_F``
    folder) when given, else from ``$codebrain_results`` by dataset, fold and configuration. ``context.options``
    may hold ``checkpoint`` (final|best|latest), ``batch_size`` and ``source_rule`` (v1). The context's
    ``ablation``, ``loss_weights``, ``variant`` and ``code_dim`` select the variant's folder
    (:func:`variant_fold_dir`). Arrays are taken in RAS voxel order unless ``affine`` is passed to :meth:`impute`.
    """

    name = "codebrain"
    trainer_folder = "CodeBrain"

    def fold_dir(self, context: ImputationContext) -> Path:
        """The folder of the context's variant (``CodeBrain[-v1][-dD][-ablation][-lmM-laA]__...``)."""
        return variant_fold_dir(context.dataset, context.fold, context.configuration, ablation=context.ablation,
                                loss_weights=context.loss_weights, variant=context.variant,
                                code_dim=context.code_dim)

    @staticmethod
    def load(fold_dir: Path, configuration: str, device: str, checkpoint: str,
             batch_size: int | None, source_rule: str = "random") -> SlicePredictor:
        """Stage I + Stage II (:func:`load_predictor_from_folder`)."""
        return load_predictor_from_folder(fold_dir, configuration, device, checkpoint, batch_size, source_rule)


class RegressionImputer(_LearnedImputer):
    """The ``regression`` entry of the registry: the direct-regression baseline trained by
    ``run_training(method="regression")`` (folder ``Regression__<plans>__<configuration>``)."""

    name = "regression"
    trainer_folder = "Regression"

    @staticmethod
    def load(fold_dir: Path, configuration: str, device: str, checkpoint: str,
             batch_size: int | None, source_rule: str = "random") -> SlicePredictor:
        """The regression network (:func:`load_regression_from_folder`; it has no variants)."""
        return load_regression_from_folder(fold_dir, configuration, device, checkpoint, batch_size)


# ---- loading from the results folder ---------------------------------------------------------------------


def model_fold_dir(dataset: str | int, fold: int | str, configuration: str, trainer: str = "CodeBrain") -> Path:
    """``$codebrain_results/DatasetXXX_Name/<trainer>__codebrainPlans__<configuration>/fold_<fold>``."""
    from codebrain_seg import paths
    from planners.experiment_planner import PLANS_NAME

    return paths.results_dataset_dir(dataset) / f"{trainer}__{PLANS_NAME}__{configuration}" / f"fold_{fold}"


def model_folder_prefix(ablation: str = "none", loss_weights: Sequence[float] | str | None = None,
                        variant: str = "cvpr", code_dim: int | None = None, dataset: str | int | None = None,
                        configuration: str | None = None) -> str:
    """``CodeBrain`` plus the variant tags ``codebrain_train`` gives the same options (``trainers.variant_name``).

    A ``loss_weights`` pair is a tag only when it differs from the plans' (read from the dataset's preprocessed
    plans, configuration ``configuration``), exactly as in training.
    """
    from trainers import CODEBRAIN_ABLATIONS, resolve_loss_weights, variant_name

    if ablation not in CODEBRAIN_ABLATIONS:
        raise ValueError(f"ablation must be one of {tuple(CODEBRAIN_ABLATIONS)}, got {ablation!r}")
    override = None
    if loss_weights is not None:
        from codebrain_seg import paths
        from planners.experiment_planner import get_configuration
        from planners.plan_and_preprocess import load_plans

        if dataset is None or configuration is None:
            raise ValueError("loss weights name a folder only relative to the plans: give the dataset and "
                             "configuration")
        planned = get_configuration(load_plans(paths.preprocessed_dataset_dir(dataset)), configuration)
        override = resolve_loss_weights(loss_weights, planned)[1]
    return "CodeBrain" + variant_name(ablation, override, variant=variant, code_dim=code_dim)


def variant_fold_dir(dataset: str | int, fold: int | str, configuration: str, *, ablation: str = "none",
                     loss_weights: Sequence[float] | str | None = None, variant: str = "cvpr",
                     code_dim: int | None = None) -> Path:
    """``fold_F`` folder of a CodeBrain variant, named as ``codebrain_train`` names it (:func:`model_folder_prefix`)."""
    prefix = model_folder_prefix(ablation, loss_weights, variant, code_dim, dataset, configuration)
    return model_fold_dir(dataset, fold, configuration, prefix)


def default_configuration(dataset: str | int, fold: int | str, device: str = "cpu", trainer: str = "CodeBrain"
                          ) -> str:
    """Configuration to use when none is given.

    The one configuration with a finished Stage II for this dataset, fold and model folder prefix (``trainer``,
    e.g. ``CodeBrain-v1``), if exactly one exists; otherwise ``codebrain_train``'s default: ``2d`` when a CUDA
    device will be used, ``2d_cpu`` otherwise.
    """
    from codebrain_seg import paths

    root = paths.results_dataset_dir(dataset)
    prefix, suffix = f"{trainer}__", f"/fold_{fold}/stage2/checkpoint_final.pth"
    found = sorted(folder.name.split("__")[-1] for folder in root.glob(f"{prefix}*")
                   if folder.is_dir() and (Path(str(folder) + suffix)).is_file()) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    return "2d" if str(device).startswith("cuda") and torch.cuda.is_available() else "2d_cpu"


def load_predictor_plans(dataset: str | int, fold: int | str, configuration: str, method: str = "codebrain",
                         trainer: str = "CodeBrain") -> dict[str, Any]:
    """The plans a model (folder prefix ``trainer``) was trained with (copied into its folder by the trainer), else
    the dataset's plans."""
    from codebrain_seg import paths
    from planners.plan_and_preprocess import load_plans

    if method == "codebrain":
        for candidate in _plans_candidates(model_fold_dir(dataset, fold, configuration, trainer)):
            if candidate.is_file():
                from codebrain_seg.io import read_json

                return read_json(candidate)
    return load_plans(paths.preprocessed_dataset_dir(dataset))


def _plans_candidates(fold_dir: Path) -> list[Path]:
    return [fold_dir.parent / "plans.json", fold_dir.parent / "codebrainPlans.json"]


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
            stage1 = torch.load(path, map_location="cpu", weights_only=True)
            return stage1["networks"]["generator"], stage1["network_config"]
    raise FileNotFoundError(f"the Stage I checkpoint of {fold_dir} is missing (looked for "
                            f"{', '.join(str(p) for p in candidates)})")


def load_predictor_from_folder(fold_dir: Path, configuration: str | None = None, device: str = "cpu",
                               checkpoint: str = "final", batch_size: int | None = None,
                               source_rule: str = "random") -> CodeBrainPredictor:
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
    if checkpoint not in CHECKPOINT_NAMES:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, got {checkpoint!r}")
    fold_dir = Path(fold_dir)
    if not fold_dir.is_dir():
        raise FileNotFoundError(f"no trained model: {fold_dir} does not exist (train it with codebrain_train)")
    path = fold_dir / "stage2" / f"checkpoint_{checkpoint}.pth"
    if not path.is_file():
        stage1_done = (fold_dir / "stage1" / "checkpoint_final.pth").is_file()
        raise FileNotFoundError(
            f"{fold_dir} has no finished Stage II ({path.relative_to(fold_dir)} is missing; Stage I is "
            f"{'finished' if stage1_done else 'not finished either'}): imputation needs both stages, train them "
            f"with codebrain_train --stage {'2' if stage1_done else 'all'}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("stage") != 2 or "prior_encoder" not in state.get("networks", {}):
        raise ValueError(f"{path} is not a CodeBrain Stage II checkpoint (stage {state.get('stage')!r})")
    trained_configuration = state.get("configuration_name")
    if configuration is not None and trained_configuration not in (None, configuration):
        raise ValueError(f"{path} was trained with configuration {trained_configuration!r}, not {configuration!r}")
    config = CodeBrainConfig.from_dict(state["network_config"])
    prior_encoder = PriorEncoder(config)
    prior_encoder.load_state_dict(state["networks"]["prior_encoder"])
    generator_weights, generator_config = _stage_one_state(state, fold_dir)
    stage_one = StageOneModel(CodeBrainConfig.from_dict(generator_config))
    stage_one.load_state_dict(generator_weights)
    plans = state.get("plans")
    if plans is None:
        from codebrain_seg.io import read_json

        plans = read_json(fold_dir.parent / "plans.json")
    identity = state.get("identity", {})
    info = {"model_folder": str(fold_dir), "checkpoint": f"stage2/{path.name}", "method": state.get("method"),
            "stage2_iteration": state.get("iteration"), "stage1_iteration": state.get("stage1_iteration"),
            "stage2_best_score": state.get("best_metric"), "network_config": config.to_dict(),
            "variant": config.variant, **{key: identity[key] for key in ("ablation", "code_dim") if key in identity}}
    return CodeBrainPredictor(stage_one, prior_encoder, plans, trained_configuration or configuration, device,
                              batch_size, info, source_rule=source_rule,
                              source_relevance=state.get("source_relevance"))


def load_regression_from_folder(fold_dir: Path, configuration: str | None = None, device: str = "cpu",
                                checkpoint: str = "final", batch_size: int | None = None) -> RegressionPredictor:
    """Load the direct-regression baseline from ``fold_F/stage1/checkpoint_<checkpoint>.pth``."""
    if checkpoint not in CHECKPOINT_NAMES:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, got {checkpoint!r}")
    path = Path(fold_dir) / "stage1" / f"checkpoint_{checkpoint}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"no trained regression baseline: {path} is missing (train it with "
                                "codebrain_train --method regression, or trainers.run_training(method='regression'))")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("method") != "regression" or "generator" not in state.get("networks", {}):
        raise ValueError(f"{path} is not a regression-baseline checkpoint (method {state.get('method')!r})")
    trained_configuration = state.get("configuration_name")
    if configuration is not None and trained_configuration not in (None, configuration):
        raise ValueError(f"{path} was trained with configuration {trained_configuration!r}, not {configuration!r}")
    network = RegressionNetwork(CodeBrainConfig.from_dict(state["network_config"]))
    network.load_state_dict(state["networks"]["generator"])
    info = {"model_folder": str(fold_dir), "checkpoint": f"stage1/{path.name}", "method": "regression",
            "iteration": state.get("iteration"), "best_score": state.get("best_metric")}
    return RegressionPredictor(network, state["plans"], trained_configuration or configuration, device, batch_size,
                               info)
