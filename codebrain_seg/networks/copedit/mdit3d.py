"""MDiT3D: the multi-modal 3D diffusion transformer of CoPeDiT (Liu et al., arXiv 2602.18400, Sec. 3.3, Fig. 3).

Each modality's latent ``(e, x, y, z)`` is patchified by a Conv3d (kernel = stride = patch) into a token grid with
fixed 3D sine-cosine positions. Blocks alternate:

* **spatial** — attention among the tokens of one modality, 3D RoPE on queries and keys, conditioned on the
  timestep only;
* **modal** — attention among the m modalities at one token position (a fixed 1D sine-cosine slot embedding is
  added before the first one), conditioned on the timestep plus the projected prompts.

These are the block kinds ``"slot"`` and ``"modal"`` of ``MDiT3DConfig.block_kinds`` (the default, MDiT3D-B). The
cardiac MDiT3D-C (``CoPeDiTConfig.paper_cardiac``) has slots = latent slabs of the short-axis stack, one token
thick, and alternates **Planar** blocks (kind ``"slot"``: the tokens of one slab, in-plane) with **Spatial** blocks
(kind ``"volume"``: all tokens of all slabs, 3D RoPE on (x, y, slab)); its prompts go only into the Spatial blocks
(``prompt_kind``).

Every block is pre-RMSNorm with adaLN-Zero (DiT, Peebles & Xie, ICCV 2023): shift, scale and gate for attention
and for the SwiGLU MLP, regressed from the conditioning vector by a zero-initialised linear layer, so a new block
is the identity; with ``modulation='shared'`` (adaLN-single, PixArt-alpha) one such layer per block kind is shared
by the blocks of that kind and each block adds its own zero-initialised offsets. The final layer (RMSNorm, adaLN on the timestep, zero-initialised linear) un-patchifies the
tokens into an x0 prediction of every slot.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit.config import MDiT3DConfig
from codebrain_seg.networks.copedit.embeddings import (
    RotaryEmbedding3D,
    sincos_position_embedding_3d,
    sinusoidal_embedding,
)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``; ``shift``, ``scale`` ``(B, D)`` broadcast over x's middle axes."""
    view = (shift.shape[0],) + (1,) * (x.dim() - 2) + (shift.shape[-1],)
    return x * (1 + scale.reshape(view)) + shift.reshape(view)


def _gate(gate: Tensor, x: Tensor) -> Tensor:
    return gate.reshape((gate.shape[0],) + (1,) * (x.dim() - 2) + (gate.shape[-1],)) * x


def mask_code_prompts(missing: Tensor) -> Tensor:
    """Binary mask codes ``(B, 1, m)`` (1 = missing) that replace the learned prompts in the paper's ablation."""
    if missing.dim() != 2:
        raise InputError(f"missing mask must be (B, m), got {tuple(missing.shape)}")
    return missing.float()[:, None, :]


class SwiGLU(nn.Module):
    """SwiGLU MLP (Shazeer, 2020): ``W3 (SiLU(W1 x) * W2 x)`` with biases; ``(..., D) -> (..., D)``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate_and_value = nn.Linear(width, 2 * hidden)
        self.output = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to ``(..., D)``."""
        gate, value = self.gate_and_value(x).chunk(2, dim=-1)
        return self.output(F.silu(gate) * value)


class Attention(nn.Module):
    """Multi-head self-attention with a biased qkv projection, optional RoPE and PyTorch SDPA."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise InputError(f"Attention width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, rope_angles: Tensor | None = None) -> Tensor:
        """Attend over the L axis of ``x`` ``(N, L, D)``; ``rope_angles`` ``(L, head_dim / 2)`` rotates q and k."""
        batch, length, width = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, L, head_dim)
        if rope_angles is not None:
            query = RotaryEmbedding3D.apply(query, rope_angles)
            key = RotaryEmbedding3D.apply(key, rope_angles)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class MDiTBlock(nn.Module):
    """Pre-RMSNorm transformer block with adaLN-Zero; attention runs over axis 2 of ``(B, G, L, D)``.

    Args:
        width: token width D.
        num_heads: attention heads.
        mlp_hidden: SwiGLU hidden width.
        norm_eps: RMSNorm epsilon.
    """

    def __init__(self, width: int, num_heads: int, mlp_hidden: int, norm_eps: float = 1e-4,
                 shared_modulation: bool = False) -> None:
        super().__init__()
        self.attention_norm = nn.RMSNorm(width, eps=norm_eps)
        self.attention = Attention(width, num_heads)
        self.mlp_norm = nn.RMSNorm(width, eps=norm_eps)
        self.mlp = SwiGLU(width, mlp_hidden)
        self.shared_modulation = shared_modulation
        if shared_modulation:
            # adaLN-single: the (B, 6D) modulation comes from the caller; this block only adds its own offsets
            self.modulation_offset = nn.Parameter(torch.zeros(6 * width))
        else:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: Tensor, condition: Tensor, rope_angles: Tensor | None = None) -> Tensor:
        """One block.

        Args:
            x: tokens ``(B, G, L, D)``: G independent groups of L tokens that attend to each other.
            condition: ``(B, D)`` conditioning vector (shared by the B-th sample's groups), or with
                ``shared_modulation`` the shared modulation ``(B, 6 D)``.
            rope_angles: ``(L, head_dim / 2)`` or None.

        Returns:
            ``(B, G, L, D)``.
        """
        batch, groups, length, width = x.shape
        modulation = condition + self.modulation_offset if self.shared_modulation else self.modulation(condition)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = modulation.chunk(6, dim=-1)
        attended = self.attention(
            modulate(self.attention_norm(x), shift_a, scale_a).reshape(batch * groups, length, width), rope_angles
        )
        x = x + _gate(gate_a, attended.reshape(batch, groups, length, width))
        return x + _gate(gate_m, self.mlp(modulate(self.mlp_norm(x), shift_m, scale_m)))


class FinalLayer(nn.Module):
    """RMSNorm, adaLN (shift, scale) on the timestep and a linear map to the patch values ``p^3 * e``."""

    def __init__(self, width: int, out_features: int, norm_eps: float = 1e-4) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(width, eps=norm_eps)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_features)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        """``(B, G, L, D)`` tokens, ``(B, D)`` condition -> ``(B, G, L, out_features)``."""
        shift, scale = self.modulation(condition).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class TimestepEmbedder(nn.Module):
    """Timestep sinusoid ``(frequency_dim)`` -> Linear -> SiLU -> Linear ``(width)``."""

    def __init__(self, width: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, timesteps: Tensor) -> Tensor:
        """``(B,)`` timesteps -> ``(B, width)``."""
        return self.mlp(sinusoidal_embedding(timesteps, self.frequency_dim))


class MDiT3D(nn.Module):
    """MDiT3D-B (defaults) and smaller variants: x0 prediction of all slots from partially noised latents.

    Args:
        config: architecture (:class:`MDiT3DConfig`).

    Call: ``model(latents (B, m, e, x, y, z), timesteps (B,), prompts (B, P, Dp)) -> (B, m, e, x, y, z)``;
    x, y, z divisible by the patch size, any grid shape (positions and RoPE are built for the grid at hand).
    """

    def __init__(self, config: MDiT3DConfig) -> None:
        super().__init__()
        self.config = config
        width, patch = config.width, config.patch_size
        self.patch_embed = nn.Conv3d(config.latent_channels, width, kernel_size=patch, stride=patch)
        self.timestep_embedder = TimestepEmbedder(width, config.frequency_dim)
        # one projection of the flattened prompts, shared by all modal blocks (this matches the 173.34 M count;
        # one per modal block would add 8 x 1.18 M)
        self.prompt_projection = nn.Sequential(nn.SiLU(), nn.Linear(config.num_prompts * config.prompt_dim, width))
        self.rope = RotaryEmbedding3D(config.rope_dims, config.rope_theta)
        shared = config.modulation == "shared"
        self.blocks = nn.ModuleList(
            MDiTBlock(width, config.num_heads, config.mlp_hidden, config.norm_eps, shared_modulation=shared)
            for _ in range(config.depth)
        )
        # adaLN-single: one modulation layer per block kind (each kind has its own conditioning vector)
        self.shared_modulations = nn.ModuleDict(
            {kind: nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width)) for kind in config.block_kinds}
            if shared else {})
        self.final_layer = FinalLayer(width, patch**3 * config.latent_channels, config.norm_eps)
        self.register_buffer(
            "slot_embedding",
            sinusoidal_embedding(torch.arange(config.num_modalities), width),
            persistent=False,
        )
        self.initialize_weights()

    def block_kind(self, index: int) -> str:
        """Kind of block ``index``: ``block_kinds[0]`` at even indices, ``block_kinds[1]`` at odd ones."""
        return self.config.block_kinds[index % 2]

    def is_spatial_block(self, index: int) -> bool:
        """True for the blocks that attend within one slot (MDiT3D-B's Spatial, MDiT3D-C's Planar blocks)."""
        return self.block_kind(index) == "slot"

    def initialize_weights(self) -> None:
        """Xavier-uniform linear layers and patchify, zero biases; adaLN and the final projection at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embed.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for block in self.blocks:
            if not block.shared_modulation:
                nn.init.zeros_(block.modulation[-1].weight)
                nn.init.zeros_(block.modulation[-1].bias)
        for modulation in self.shared_modulations.values():
            nn.init.zeros_(modulation[-1].weight)
            nn.init.zeros_(modulation[-1].bias)
        for layer in (self.final_layer.modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check_inputs(self, latents: Tensor, timesteps: Tensor, prompts: Tensor) -> None:
        config = self.config
        if latents.dim() != 6 or latents.shape[1:3] != (config.num_modalities, config.latent_channels):
            raise InputError(f"MDiT3D latents must be (B, {config.num_modalities}, {config.latent_channels}, x, y, z), "
                             f"got {tuple(latents.shape)}")
        if any(size % config.patch_size for size in latents.shape[3:]):
            raise InputError(f"MDiT3D latent grid {tuple(latents.shape[3:])} is not divisible by the patch size "
                             f"{config.patch_size}")
        if timesteps.shape != (latents.shape[0],):
            raise InputError(f"MDiT3D timesteps must be ({latents.shape[0]},), got {tuple(timesteps.shape)}")
        if prompts.shape != (latents.shape[0], config.num_prompts, config.prompt_dim):
            raise InputError(f"MDiT3D prompts must be ({latents.shape[0]}, {config.num_prompts}, {config.prompt_dim}),"
                             f" got {tuple(prompts.shape)}")

    def forward(self, latents: Tensor, timesteps: Tensor, prompts: Tensor) -> Tensor:
        """Predict the clean latents of every slot.

        Args:
            latents: ``(B, m, e, x, y, z)``: clean available slots, noised missing slots.
            timesteps: ``(B,)`` diffusion timesteps.
            prompts: ``(B, P, Dp)`` completeness prompts of the frozen CoPeVAE (or mask codes in the ablation).

        Returns:
            x0 prediction ``(B, m, e, x, y, z)``.
        """
        self._check_inputs(latents, timesteps, prompts)
        batch, slots, channels = latents.shape[:3]
        patch = self.config.patch_size
        tokens = self.patch_embed(latents.flatten(0, 1))  # (B*m, D, gx, gy, gz)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)  # (B*m, N, D), z fastest
        positions = sincos_position_embedding_3d(grid, self.config.width).to(tokens.device, tokens.dtype)
        tokens = (tokens + positions).reshape(batch, slots, -1, self.config.width)  # (B, m, N, D)

        time_condition = self.timestep_embedder(timesteps)
        prompt_condition = time_condition + self.prompt_projection(prompts.flatten(1).to(time_condition.dtype))
        conditions = {kind: prompt_condition if kind == self.config.prompt_kind else time_condition
                      for kind in self.config.block_kinds}
        if self.shared_modulations:
            conditions = {kind: self.shared_modulations[kind](condition) for kind, condition in conditions.items()}
        rope_angles = self.rope.angles(grid)
        volume_angles = self.rope.stacked_angles(grid, slots) if "volume" in self.config.block_kinds else None
        first_across = next((i for i in range(len(self.blocks)) if self.block_kind(i) != "slot"), None)
        for index, block in enumerate(self.blocks):
            kind = self.block_kind(index)
            if index == first_across:
                tokens = tokens + self.slot_embedding.to(tokens.dtype)[None, :, None, :]
            if kind == "slot":
                tokens = block(tokens, conditions[kind], rope_angles)
            elif kind == "modal":
                # (B, m, N, D) -> (B, N, m, D): the m slots at one position attend to each other
                tokens = block(tokens.transpose(1, 2), conditions[kind]).transpose(1, 2)
            else:
                # "volume": (B, m, N, D) -> (B, 1, m N, D): every token of every slot attends to every other one
                tokens = block(tokens.reshape(batch, 1, -1, tokens.shape[-1]), conditions[kind],
                               volume_angles).reshape(tokens.shape)

        out = self.final_layer(tokens, time_condition)  # (B, m, N, p^3 * e)
        gx, gy, gz = grid
        out = out.reshape(batch, slots, gx, gy, gz, channels, patch, patch, patch)
        out = out.permute(0, 1, 5, 2, 6, 3, 7, 4, 8)
        return out.reshape(batch, slots, channels, gx * patch, gy * patch, gz * patch)
