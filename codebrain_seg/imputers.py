"""The imputation method registry: every method fills the missing sequences of a case through one interface.

A method is built by ``get_imputer(name, context)`` and called as
``imputer.impute(images, available) -> images`` with

* ``images``: float32 (C, X, Y, Z) in the original intensities of the case's files, missing channels all zero;
* ``available``: C booleans (True = the sequence was given);

and returns a (C, X, Y, Z) array whose available channels are the input's, unchanged, and whose missing
channels are filled, in the intensity scale documented by the method (``intensity_scale``). Adding a method is
adding a class and one registry line; no other method changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from planners.fingerprint import brain_mask
from planners.preprocessing import normalise


@dataclass
class ImputationContext:
    """What a method may need to build itself: the plans of the dataset and, for learned ones, the model.

    ``ablation``, ``loss_weights``, ``variant`` and ``code_dim`` name the CodeBrain variant whose results folder is
    loaded (same meaning as ``codebrain_train``'s options; ignored when ``model_dir`` is given and by methods
    without variants).
    """

    plans: dict[str, Any]
    dataset: str = ""
    fold: int | str = 0
    configuration: str = "2d_cpu"
    device: str = "cpu"
    model_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    ablation: str = "none"
    loss_weights: Sequence[float] | str | None = None
    variant: str = "cvpr"
    code_dim: int | None = None


class Imputer(Protocol):
    """Interface of an imputation method (see module docstring)."""

    name: str
    intensity_scale: str

    def impute(self, images: np.ndarray, available: Sequence[bool]) -> np.ndarray:
        """Fill the missing channels of a (C, X, Y, Z) case."""
        ...


def check_request(images: np.ndarray, available: Sequence[bool], num_channels: int) -> np.ndarray:
    """Validate an imputation request; returns the availability as a boolean array."""
    available = np.asarray(available, dtype=bool)
    if images.ndim != 4 or images.shape[0] != num_channels:
        raise ValueError(f"expected images of shape (C={num_channels}, X, Y, Z), got {images.shape}")
    if available.shape != (num_channels,):
        raise ValueError(f"expected {num_channels} availability flags, got {available.shape}")
    if not available.any():
        raise ValueError("all sequences are missing: at least one must be given to impute the others")
    if not np.isfinite(images[available]).all():
        raise ValueError("the given sequences contain NaN or infinite voxels")
    return available


class ZeroFill:
    """The missing sequences stay all-zero (the lower bound every method must beat)."""

    name = "zero"
    intensity_scale = "zero everywhere"

    def __init__(self, context: ImputationContext) -> None:
        self.num_channels = len(context.plans["channel_names"])

    def impute(self, images: np.ndarray, available: Sequence[bool]) -> np.ndarray:
        """Return the input with missing channels set to zero."""
        available = check_request(images, available, self.num_channels)
        output = images.astype(np.float32, copy=True)
        output[~available] = 0.0
        return output


class MeanOfAvailable:
    """Mean of the available sequences (each scaled to [0, 1]) rescaled to the missing sequence's typical range."""

    name = "mean"
    intensity_scale = "the training set's median 99.5th brain percentile of the missing sequence maps to 1"

    def __init__(self, context: ImputationContext) -> None:
        self.channel_names = list(context.plans["channel_names"])
        self.upper_percentile = context.plans["normalization"]["upper_percentile"]
        reference = context.plans["intensity_reference"]
        self.typical_upper = np.array([reference[name]["median_p99_5"] for name in self.channel_names],
                                      dtype=np.float32)

    def impute(self, images: np.ndarray, available: Sequence[bool]) -> np.ndarray:
        """Return the input with each missing channel set to the rescaled mean of the available ones."""
        available = check_request(images, available, len(self.channel_names))
        output = images.astype(np.float32, copy=True)
        mask = brain_mask([images[c] for c in np.flatnonzero(available)])
        scaled = [normalise(images[c], mask, self.upper_percentile)[0] for c in np.flatnonzero(available)]
        mean = np.mean(scaled, axis=0)
        for channel in np.flatnonzero(~available):
            output[channel] = mean * self.typical_upper[channel]
        return output


def _codebrain(context: ImputationContext) -> Imputer:
    """CodeBrain (Stage I + II) from the results folder; imported on first use to keep this module light."""
    from codebrain_seg.predictor import CodeBrainImputer

    return CodeBrainImputer(context)


def _regression(context: ImputationContext) -> Imputer:
    """Direct-regression network baseline from the results folder; imported on first use."""
    from codebrain_seg.predictor import RegressionImputer

    return RegressionImputer(context)


def _copedit(context: ImputationContext) -> Imputer:
    """CoPeDiT (CoPeVAE + MDiT3D, whole 3D volumes) from the results folder; imported on first use."""
    from codebrain_seg.copedit_predictor import CoPeDiTImputer

    return CoPeDiTImputer(context)


def _copedit_configuration(dataset: str | int, fold: int | str, device: str = "cpu",
                           options: dict[str, Any] | None = None) -> str:
    from codebrain_seg.copedit_predictor import resolve_configuration

    return resolve_configuration(dataset, fold, device, options)


# A method whose model lives in a configuration of its own (CoPeDiT's 3D volumes) says how to find it when none is
# given: ``factory.resolve_configuration(dataset, fold, device, options) -> name``.
_copedit.resolve_configuration = _copedit_configuration  # type: ignore[attr-defined]


def with_options(factory: Callable[[ImputationContext], Imputer], **preset: Any
                 ) -> Callable[[ImputationContext], Imputer]:
    """A registry entry that is ``factory`` with some of its ``context.options`` fixed (a trained option of a
    method, e.g. CoPeDiT's mask-prompt ablation, becomes a method name the evaluations can put in a row)."""

    def build(context: ImputationContext) -> Imputer:
        return factory(replace(context, options={**context.options, **preset}))

    resolver = getattr(factory, "resolve_configuration", None)
    if resolver is not None:
        build.resolve_configuration = (  # type: ignore[attr-defined]
            lambda dataset, fold, device="cpu", options=None: resolver(dataset, fold, device,
                                                                       {**(options or {}), **preset}))
    build.__doc__ = f"{factory.__doc__} Options fixed: {preset}."
    return build


IMPUTERS: dict[str, Callable[[ImputationContext], Imputer]] = {
    "zero": ZeroFill,
    "mean": MeanOfAvailable,
    "codebrain": _codebrain,
    "regression": _regression,
    "copedit": _copedit,
    # CoPeDiT trained with ``codebrain_train --method copedit --prompts mask`` (binary mask codes as prompts).
    "copedit-mask": with_options(_copedit, prompts="mask"),
}


def register_imputer(name: str, factory: Callable[[ImputationContext], Imputer]) -> None:
    """Add a method to the registry (its name must be new)."""
    if name in IMPUTERS:
        raise ValueError(f"imputation method {name!r} is already registered")
    IMPUTERS[name] = factory


def get_imputer(name: str, context: ImputationContext) -> Imputer:
    """Build a registered method; the error lists the known names."""
    if name not in IMPUTERS:
        raise KeyError(f"unknown imputation method {name!r}; known: {', '.join(sorted(IMPUTERS))}")
    return IMPUTERS[name](context)
