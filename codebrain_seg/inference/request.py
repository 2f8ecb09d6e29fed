"""What every imputation method takes and returns: the request check, the context a method is built from, its
interface, and the fingerprint that keys cached imputations.

A method is called as ``imputer.impute(images, available) -> images`` with

* ``images``: float32 (C, X, Y, Z) in the original intensities of the case's files, missing channels all zero;
* ``available``: C booleans (True = the sequence was given);

and returns a (C, X, Y, Z) array whose available channels are the input's, unchanged, and whose missing
channels are filled, in the intensity scale documented by the method (``intensity_scale``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from codebrain_seg.errors import InputError
from codebrain_seg.variants import CodeBrainVariant


@dataclass
class ImputationContext:
    """What a method may need to build itself: the plans of the dataset and, for learned ones, the model.

    ``codebrain`` names the CodeBrain variant whose results folder is loaded (``codebrain_train``'s ``--variant
    --code-dim --ablation --loss-weights``; ignored when ``model_dir`` is given and by methods without variants). Its
    ``seed_index`` selects the ``-seedK`` folder of a seeded experiment for every learned method (CoPeDiT too).
    """

    plans: dict[str, Any]
    dataset: str = ""
    fold: int | str = 0
    configuration: str = "2d_cpu"
    device: str = "cpu"
    model_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    codebrain: CodeBrainVariant = field(default_factory=CodeBrainVariant)


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
        raise InputError(f"expected images of shape (C={num_channels}, X, Y, Z), got {images.shape}")
    if available.shape != (num_channels,):
        raise InputError(f"expected {num_channels} availability flags, got {available.shape}")
    if not available.any():
        raise InputError("all sequences are missing: at least one must be given to impute the others")
    if not np.isfinite(images[available]).all():
        raise InputError("the given sequences contain NaN or infinite voxels")
    return available


def model_fingerprint(fold_dir: Path, checkpoint: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What a learned method's imputations depend on: model folder, checkpoint files (size, mtime), settings.

    Caches of imputed volumes (segmentation evaluation) compare it to know when a retrained model makes them stale.
    """
    stamps = {path.parent.name: [path.stat().st_size, path.stat().st_mtime_ns]
              for path in sorted(fold_dir.glob(f"stage*/checkpoint_{checkpoint}.pth"))}
    return {"model": str(fold_dir.resolve()), "checkpoint": checkpoint, **settings, "checkpoints": stamps}
