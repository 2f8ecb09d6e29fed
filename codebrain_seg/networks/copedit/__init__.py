"""CoPeDiT networks (Liu et al., arXiv 2602.18400): CoPeVAE tokenizer, MDiT3D, missing-slot diffusion, configs."""
from __future__ import annotations

from codebrain_seg.networks.copedit.cardiac import (
    cpu_cardiac_config,
    paper_cardiac_config,
    sample_missing_runs,
    slabs_to_stack,
    stack_to_slabs,
)
from codebrain_seg.networks.copedit.config import (
    CoPeDiTConfig,
    CoPeVAEConfig,
    DiffusionConfig,
    MDiT3DConfig,
)
from codebrain_seg.networks.copedit.copevae import (
    CoPeVAE,
    CoPeVAEOutput,
    PromptEncoder,
    check_missing_mask,
    sample_missing_masks,
)
from codebrain_seg.networks.copedit.diffusion import (
    ExponentialMovingAverage,
    MissingSlotDiffusion,
    available_first_order,
    reorder_slots,
    restore_slot_order,
)
from codebrain_seg.networks.copedit.embeddings import (
    RotaryEmbedding3D,
    sincos_position_embedding_3d,
    sinusoidal_embedding,
)
from codebrain_seg.networks.copedit.losses import (
    CoPeVAELoss,
    build_discriminator,
    build_perceptual_loss,
    contrastive_assessment_loss,
    missing_count_loss,
    missing_position_loss,
    pretext_losses,
)
from codebrain_seg.networks.copedit.mdit3d import MDiT3D, MDiTBlock, mask_code_prompts

__all__ = [
    "CoPeDiTConfig",
    "CoPeVAE",
    "CoPeVAEConfig",
    "CoPeVAELoss",
    "CoPeVAEOutput",
    "DiffusionConfig",
    "ExponentialMovingAverage",
    "MDiT3D",
    "MDiT3DConfig",
    "MDiTBlock",
    "MissingSlotDiffusion",
    "PromptEncoder",
    "RotaryEmbedding3D",
    "available_first_order",
    "build_discriminator",
    "build_perceptual_loss",
    "check_missing_mask",
    "contrastive_assessment_loss",
    "cpu_cardiac_config",
    "mask_code_prompts",
    "missing_count_loss",
    "missing_position_loss",
    "paper_cardiac_config",
    "pretext_losses",
    "reorder_slots",
    "restore_slot_order",
    "sample_missing_masks",
    "sample_missing_runs",
    "sincos_position_embedding_3d",
    "sinusoidal_embedding",
    "slabs_to_stack",
    "stack_to_slabs",
]
