"""Checkpoint files: one loader that reads with ``weights_only=True``, turns a corrupt file into a clear error and
checks once what the file must hold.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (``trainers.base_trainer`` writes it
atomically); see docs/reference/checkpoints.md for the keys.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from codebrain_seg.errors import InputError, MissingFileError

CHECKPOINT_NAMES = ("final", "best", "latest")


class CheckpointError(InputError):
    """A checkpoint file that cannot be read or is not what the step needs."""


def check_checkpoint_name(name: str) -> str:
    """``name`` if it is one of :data:`CHECKPOINT_NAMES` (final | best | latest)."""
    if name not in CHECKPOINT_NAMES:
        raise InputError(f"checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}, got {name!r}")
    return name


def load_checkpoint(path: Path, *, expect: Mapping[str, Any] | None = None, keys: Sequence[str] = (),
                    what: str = "checkpoint", map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (``weights_only=True``) and check it.

    Args:
        path: the ``.pth`` file.
        expect: top-level fields and the values they must have (e.g. ``{"method": "copedit", "stage": 2}``).
        keys: top-level (or ``a.b`` nested) keys it must hold.
        what: how the error names the file's expected content ("CodeBrain Stage II checkpoint").

    Raises:
        MissingFileError: no such file.
        CheckpointError: an empty, truncated or foreign file, or one without the expected fields.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        # PytorchStreamReader / EOFError: an empty or truncated file, typically a copy or download cut short.
        raise CheckpointError(f"{path} cannot be read as a {what} ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no detail'}); the file is damaged "
                              f"or incomplete: delete it and train (or copy) it again") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a {what}: it holds a {type(state).__name__}, not a dict")
    for key, value in (expect or {}).items():
        if state.get(key) != value:
            found = ", ".join(f"{k} {state.get(k)!r}" for k in expect)  # type: ignore[union-attr]
            raise CheckpointError(f"{path} is not a {what} ({found})")
    for key in keys:
        node: Any = state
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise CheckpointError(f"{path} is not a {what}: it has no {key!r}")
            node = node[part]
    return state


def check_trained_configuration(state: Mapping[str, Any], path: Path, configuration: str | None) -> str | None:
    """The configuration a checkpoint was trained with; CheckpointError if ``configuration`` is given and differs."""
    trained = state.get("configuration_name")
    if configuration is not None and trained not in (None, configuration):
        raise CheckpointError(f"{path} was trained with configuration {trained!r}, not {configuration!r}")
    return trained or configuration
