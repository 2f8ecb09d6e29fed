"""CoPeDiT for missing slices of short-axis cardiac cine MRI: CoPeVAE-C and MDiT3D-C as configurations.

The paper (Liu et al., arXiv 2602.18400, Sec. 3, Tables 3, 14 and 15) uses one formulation for both tasks: a case
is m elements, some missing. For the cardiac task the elements are **slices**: the stack (192 x 192 x 32 in the
paper) is cut into m = 4 consecutive slabs of 8 slices, one latent slice each after the 8x compression, so that
MDiT3D-C sees ``4 x 8 x 24 x 24`` (Table 15) and a missing run of 8 / 16 / 24 slices (Table 3) is 1 / 2 / 3 slabs.
The shared networks take the slabs exactly as they take a brain case's sequences (``elements='slices'``):

* **CoPeVAE-C** — the single-channel VQVAE with channels (32, 64, 128), codebook 8192 x 8, compression 8, encodes
  each slab ``(192, 192, 8)`` on its own into ``(8, 24, 24, 1)``. The paper encodes the 32-slice volume at once;
  slab by slab, a given slab's latent does not depend on the missing slices (no zero-filled slices leak into the
  context, no train / inference mismatch) and the through-plane context is MDiT3D's job. The three pretext tasks
  are unchanged on slabs: how many are missing, which ones, and the contrastive assessment of the missing run.
* **MDiT3D-C** — width 576, 12 blocks, 12 heads, patch 1: alternating Planar blocks (``"slot"``: the 576 tokens
  of one slab) and Spatial blocks (``"volume"``: all 2304 tokens, 3D RoPE on (x, y, slab)), the prompts only in
  the Spatial blocks. Table 15 gives neither the MLP width nor the conditioning layout, and per-block adaLN-Zero
  alone puts 42.0 M parameters into 12 blocks of width 576, more than the 33.0 M reported; so MDiT3D-C shares
  one adaLN layer per block kind (adaLN-single, PixArt-alpha) and its SwiGLU hidden width, 528, is the one that
  gives 33.0 M.
* Missing sets: consecutive runs of random length 1..m-1 at a random start (:func:`sample_missing_runs`); only
  the missing slabs' latents are noised (``MissingSlotDiffusion``, x0 prediction), DDIM with 250 steps (Table 15).

Shapes: a stack ``(B, X, Y, m * Z)`` <-> slabs ``(B, m, X, Y, Z)`` (:func:`stack_to_slabs`, :func:`slabs_to_stack`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit.config import CoPeDiTConfig, CoPeVAEConfig, DiffusionConfig, MDiT3DConfig

CARDIAC_SLABS = 4
PAPER_STACK = (192, 192, 32)
CPU_STACK = (64, 64, 16)
MDIT3D_C_MLP_HIDDEN = 528  # gives the paper's 33.0 M with shared adaLN (module docstring)


def paper_cardiac_config() -> CoPeDiTConfig:
    """CoPeVAE-C + MDiT3D-C on 192 x 192 x 32 stacks as 4 slabs of 192 x 192 x 8 (Tables 14 and 15)."""
    slabs = CARDIAC_SLABS
    return CoPeDiTConfig(
        volume_shape=(PAPER_STACK[0], PAPER_STACK[1], PAPER_STACK[2] // slabs),
        vae=CoPeVAEConfig(num_modalities=slabs, channels=(32, 64, 128), num_res_layers=3,
                          num_res_channels=(32, 64, 128), num_embeddings=8192, embedding_dim=8),
        dit=MDiT3DConfig(num_modalities=slabs, latent_channels=8, patch_size=1, width=576, depth=12, num_heads=12,
                         mlp_hidden=MDIT3D_C_MLP_HIDDEN, rope_dims=(20, 20, 8), block_kinds=("slot", "volume"),
                         prompt_kind="volume", modulation="shared"),
        diffusion=DiffusionConfig(sampling_steps=250),
        elements="slices",
    )


def cpu_cardiac_config() -> CoPeDiTConfig:
    """Small preset: 64 x 64 x 16 stacks as 4 slabs of 64 x 64 x 4, compression 4, latents 8 x 16 x 16 x 1.

    The structure of MDiT3D-C (Planar / Spatial blocks, prompts in the Spatial ones, shared adaLN) at width 96,
    depth 4, 3 heads; CoPeVAE with widths 16 / 32, one residual unit, codebook 512, prompts 128 wide.
    """
    slabs = CARDIAC_SLABS
    return CoPeDiTConfig(
        volume_shape=(CPU_STACK[0], CPU_STACK[1], CPU_STACK[2] // slabs),
        vae=CoPeVAEConfig(num_modalities=slabs, channels=(16, 32), num_res_layers=1, num_res_channels=(16, 32),
                          num_embeddings=512, prompt_conv_widths=(32, 64), prompt_hidden=128, prompt_dim=128,
                          contrastive_dim=64, discriminator_channels=8, discriminator_layers=2),
        dit=MDiT3DConfig(num_modalities=slabs, patch_size=1, width=96, depth=4, num_heads=3, mlp_hidden=256,
                         rope_dims=(12, 12, 8), prompt_dim=128, block_kinds=("slot", "volume"),
                         prompt_kind="volume", modulation="shared"),
        diffusion=DiffusionConfig(sampling_steps=20),
        elements="slices",
    )


def sample_missing_runs(batch: int, num_slots: int, generator: torch.Generator | None = None) -> Tensor:
    """Missing sets ``(B, m)`` bool of consecutive slabs: a length L in 1..m-1, then a start in 0..m-L, per case."""
    if num_slots < 2 or batch < 1:
        raise InputError(f"sample_missing_runs needs batch >= 1 and num_slots >= 2, got {batch}, {num_slots}")
    lengths = torch.randint(1, num_slots, (batch,), generator=generator)
    starts = (torch.rand(batch, generator=generator) * (num_slots - lengths + 1)).floor().long()
    positions = torch.arange(num_slots)[None]
    return (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])


def stack_to_slabs(stack: Tensor, num_slabs: int) -> Tensor:
    """``(B, X, Y, m * Z)`` -> ``(B, m, X, Y, Z)``: consecutive slices grouped into m slabs along the last axis."""
    if stack.dim() != 4 or stack.shape[-1] % num_slabs:
        raise InputError(f"stack must be (B, X, Y, Z) with Z divisible by {num_slabs}, got {tuple(stack.shape)}")
    batch, x, y, z = stack.shape
    return stack.reshape(batch, x, y, num_slabs, z // num_slabs).permute(0, 3, 1, 2, 4)


def slabs_to_stack(slabs: Tensor) -> Tensor:
    """``(B, m, X, Y, Z)`` -> ``(B, X, Y, m * Z)``, the inverse of :func:`stack_to_slabs`."""
    if slabs.dim() != 5:
        raise InputError(f"slabs must be (B, m, X, Y, Z), got {tuple(slabs.shape)}")
    batch, m, x, y, z = slabs.shape
    return slabs.permute(0, 2, 3, 1, 4).reshape(batch, x, y, m * z)


def slab_mask_of_slices(missing_slices: Tensor, num_slabs: int) -> Tensor:
    """Slice mask ``(B, m * Z)`` (True = missing) -> slab mask ``(B, m)``: a slab is missing if any slice of it is."""
    if missing_slices.dim() != 2 or missing_slices.shape[1] % num_slabs:
        raise InputError(f"slice mask must be (B, Z) with Z divisible by {num_slabs}, got "
                         f"{tuple(missing_slices.shape)}")
    return missing_slices.bool().reshape(missing_slices.shape[0], num_slabs, -1).any(dim=2)
