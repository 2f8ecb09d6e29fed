"""CoPeDiT networks (Liu et al., arXiv 2602.18400): CoPeVAE tokenizer, MDiT3D, missing-slot diffusion, configs.

The names below are imported on first use (PEP 562): the planners and the CodeBrain imputation read the light
config modules (``config``, ``cardiac``) through this package, and importing the MONAI-based networks with them
cost seconds of every command's start-up on a small CPU.
"""
from __future__ import annotations

import importlib
from typing import Any

# exported name -> submodule that defines it
_SUBMODULES = {
    "CoPeDiTConfig": "config",
    "CoPeVAE": "copevae",
    "CoPeVAEConfig": "config",
    "CoPeVAELoss": "losses",
    "CoPeVAEOutput": "copevae",
    "DiffusionConfig": "config",
    "ExponentialMovingAverage": "diffusion",
    "MDiT3D": "mdit3d",
    "MDiT3DConfig": "config",
    "MDiTBlock": "mdit3d",
    "MissingSlotDiffusion": "diffusion",
    "PromptEncoder": "copevae",
    "RotaryEmbedding3D": "embeddings",
    "available_first_order": "diffusion",
    "build_discriminator": "losses",
    "build_perceptual_loss": "losses",
    "check_missing_mask": "copevae",
    "contrastive_assessment_loss": "losses",
    "cpu_cardiac_config": "cardiac",
    "mask_code_prompts": "mdit3d",
    "missing_count_loss": "losses",
    "missing_position_loss": "losses",
    "paper_cardiac_config": "cardiac",
    "pretext_losses": "losses",
    "reorder_slots": "diffusion",
    "restore_slot_order": "diffusion",
    "sample_missing_masks": "copevae",
    "sample_missing_runs": "cardiac",
    "sincos_position_embedding_3d": "embeddings",
    "sinusoidal_embedding": "embeddings",
    "slabs_to_stack": "cardiac",
    "stack_to_slabs": "cardiac",
}

__all__ = sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SUBMODULES[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
