"""What every slice-wise learned imputer (CodeBrain, the regression baseline) shares: the case preprocessed as in
training (``planners.slice_preprocessing.prepare_case``), batched inference over its slices, and the result
mapped back onto the case's own grid (``restore_to_original``): zero outside the field of view (slices without
brain, voxels outside the crop) and outside the brain mask.

**Intensity scale of an imputed sequence.** The network works in [0, 1] where 1 is the sequence's own 99.5th
brain percentile; for a missing sequence that percentile is unknown by definition (the given sequences' scales
say nothing about it: scanners scale each sequence independently). The output is therefore clamped to [0, 1] and
multiplied by the training set's median 99.5th brain percentile of that sequence
(``plans["intensity_reference"][name]["median_p99_5"]``): an imputed sequence looks like a typical training case
of that sequence. Given sequences are returned unchanged.

**Mirroring** (``mirroring=True``, ``codebrain_impute --mirror``; off by default): the output is the mean over the
slice and its three in-plane flips, the flips training augments with (nnU-Net's test-time mirroring). Four passes,
so about four times the seconds; +0.1 dB held-out PSNR on the 45-minute models of ``docs/results/real_data.md``.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from codebrain_seg.device import native_bf16, preferred_memory_format
from codebrain_seg.errors import InputError
from codebrain_seg.inference.request import check_request
from codebrain_seg.plans import Plans
from planners.slice_preprocessing import prepare_case, restore_to_original

INTENSITY_SCALE = ("network output clamped to [0, 1] times the training set's median 99.5th brain percentile of the "
                   "sequence (plans intensity_reference median_p99_5)")


INFERENCE_PRECISIONS = ("auto", "fp32", "bf16")
# Activation memory one inference batch may take (the model, the case and its output come on top; the target for
# a whole codebrain_impute run is a peak of 3 GB).
INFERENCE_MEMORY_BYTES = 1.5e9
# On a CPU the largest batch that fits is not the fastest: the NAFNet's convolutions and normalisations are bound by
# memory traffic, and feature maps that leave the caches cost more than the per-batch overhead saves. Measured on a
# held-out real BraTS volume (2d_cpu 8/16/16/1 at 152x184, one AVX2 thread): batch 64 took 64 s, 16 45 s, 4 32 s,
# 2 18 s, 1 17 s; with two threads (AMD EPYC with AVX512-BF16, bf16) batch 1 took 5.7-6.5 s, 2 5.0-5.2, 4 5.0-5.2,
# 8 5.1-6.1, 16 6.5-6.9. So a CPU batch holds about this many bytes of activations per torch thread (one slice of
# these networks each).
CPU_INFERENCE_MEMORY_BYTES = 32e6
MAX_INFERENCE_BATCH = 64
# Spatial axes of a (B, C, H, W) batch flipped by mirroring: none, H, W, both (training's MirrorTransform axes).
MIRROR_AXES = ((), (2,), (3,), (2, 3))


def inference_batch_size(configuration: Mapping[str, Any], memory_bytes: float = INFERENCE_MEMORY_BYTES,
                         device: torch.device | None = None) -> int:
    """Slices per forward pass from a memory estimate: the full-resolution feature maps dominate, about 12 of them
    of the widest network width alive at once (NAFNet blocks double their width inside), 4 bytes a value. On a CPU
    (``device``) the budget is :data:`CPU_INFERENCE_MEMORY_BYTES` per torch thread (cache-sized), on a GPU
    ``memory_bytes``."""
    if device is not None and device.type == "cpu":
        memory_bytes = min(memory_bytes, CPU_INFERENCE_MEMORY_BYTES * torch.get_num_threads())
    crop = [int(s) for s in configuration.get("crop_size", (256, 256))]
    network = configuration.get("network", {})
    width = max(int(network.get(key, 32)) for key in ("posterior_width", "common_width", "decoder_width"))
    per_slice = 12 * width * crop[0] * crop[1] * 4.0
    return int(max(1, min(MAX_INFERENCE_BATCH, memory_bytes // per_slice)))


def resolve_inference_precision(precision: str, device: torch.device) -> str:
    """``bf16`` for ``auto`` where the device computes bf16 natively (AMX / AVX512-BF16 CPUs, recent GPUs; the
    training default too), else ``fp32``."""
    if precision not in INFERENCE_PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def network_input(slices: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """``(B, C, H, W)`` float32 on ``device`` in the device's preferred memory order
    (:func:`codebrain_seg.device.preferred_memory_format`), the order the networks are kept in, as in training, so
    no convolution reorders its input (same results up to float rounding)."""
    tensor = torch.as_tensor(slices, dtype=torch.float32).to(device)
    return tensor.contiguous(memory_format=preferred_memory_format(tensor.device))


class SlicePredictor:
    """What every slice-wise learned imputer shares: preprocessing as in training, batched inference, mapping back.

    Subclasses implement :meth:`predict_slices`. Args as in :class:`CodeBrainPredictor`.
    """

    supports_confidence = False
    # Whether predict_slices takes the availability of the batch (``available=``); models that infer nothing from it
    # keep the one-argument signature.
    uses_availability = False

    def __init__(self, plans: dict[str, Any], configuration: str, device: str | torch.device = "cpu",
                 batch_size: int | None = None, model_info: dict[str, Any] | None = None,
                 precision: str = "auto", mirroring: bool = False) -> None:
        view = Plans(plans)
        self.plans = plans
        self.configuration_name = configuration
        self.configuration = plans["configurations"][view.configuration(configuration).name]
        self.channel_names = view.channel_names
        self.device = torch.device(device)
        if batch_size is not None and int(batch_size) < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size or inference_batch_size(self.configuration, device=self.device))
        self.precision = resolve_inference_precision(precision, self.device)
        self.reference_upper = np.array(view.reference_uppers, dtype=np.float32)
        self.mirroring = bool(mirroring)
        self.model_info = dict(model_info or {}, precision=self.precision, mirroring=self.mirroring)

    # The inference options of apply_options (they change the imputed values, so they key cached imputations).
    inference_options = ("precision", "mirroring")

    def apply_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Set ``precision`` (auto | fp32 | bf16) and ``mirroring`` from an imputation context's options (absent:
        the defaults); returns the options now in force, which ``model_info`` records too."""
        self.precision = resolve_inference_precision(options.get("precision", "auto"), self.device)
        self.mirroring = bool(options.get("mirroring", False))
        chosen = {name: getattr(self, name) for name in self.inference_options}
        self.model_info.update(chosen)
        return chosen

    def autocast(self) -> Any:
        """bf16 autocast where the device computes bf16 natively (as training does), else nothing."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

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
            raise InputError(f"{type(self).__name__} gives no confidence map (it needs CodeBrain's ordinal "
                             "'grading' Stage II head)")
        channels, num_slices, height, width = stack.shape
        output = np.zeros_like(stack, dtype=np.float32)
        confidence = np.zeros((num_slices, height, width), np.float32) if with_confidence else None
        # Slices where every given sequence is zero hold no brain: their output is zero anyway (outside the brain).
        occupied = np.flatnonzero(stack.reshape(channels, num_slices, -1).any(axis=(0, 2)))
        passed = {"available": available} if self.uses_availability and available is not None else {}
        for start in range(0, len(occupied), self.batch_size):
            chosen = occupied[start:start + self.batch_size]
            batch = np.ascontiguousarray(stack[:, chosen].transpose(1, 0, 2, 3))
            result = self._predict_mirrored(batch, passed)
            output[:, chosen] = result["reconstruction"].float().clamp(0, 1).numpy().transpose(1, 0, 2, 3)
            if confidence is not None:
                upsampled = F.interpolate(result["confidence"].float()[:, None], size=(height, width),
                                          mode="bilinear", align_corners=False)
                confidence[chosen] = upsampled[:, 0].numpy()
        return output, confidence

    def _predict_mirrored(self, batch: np.ndarray, passed: dict[str, Any]) -> dict[str, Tensor]:
        """:meth:`predict_slices` of ``(B, C, H, W)``, averaged over :data:`MIRROR_AXES` when mirroring."""
        with self.autocast():
            if not self.mirroring:
                return self.predict_slices(batch, **passed)
            results = []
            for axes in MIRROR_AXES:
                result = self.predict_slices(np.ascontiguousarray(np.flip(batch, axes)) if axes else batch, **passed)
                # Back to the slice's orientation: the reconstruction is (B, C, H, W), the confidence (B, h, w).
                results.append({key: value.float().flip([axis - 4 for axis in axes]) if axes else value.float()
                                for key, value in result.items() if key in ("reconstruction", "confidence")})
        return {key: torch.stack([r[key] for r in results]).mean(dim=0) for key in results[0]}

    # -- whole cases ---------------------------------------------------------------------------------------

    def _impute(self, images: np.ndarray, available: Sequence[bool], affine: np.ndarray | None,
                with_confidence: bool) -> tuple[np.ndarray, np.ndarray | None]:
        available = check_request(np.asarray(images), available, self.num_channels)
        images = np.asarray(images, dtype=np.float32)
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        stack, brain, properties = prepare_case(images, available, affine, self.plans, self.configuration)
        stack[~available] = 0.0
        reconstruction, confidence = self.predict_stack(stack, with_confidence, available)
        # Only the missing sequences go back to the original grid (the given ones are returned unchanged): a
        # quarter of the copying for one missing sequence of four.
        missing = np.flatnonzero(~available)
        restored_part = reconstruction[missing] * brain[None]
        properties = dict(properties, normalization_upper=self.reference_upper[missing].tolist())
        output = images.copy()
        output[missing] = restore_to_original(restored_part, properties, denormalise=True)
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
