"""Position and time embeddings of MDiT3D: sinusoids, fixed 3D sine-cosine positions, 3D rotary embeddings.

* :func:`sinusoidal_embedding` — the DiT timestep sinusoid (Peebles & Xie, ICCV 2023), also used for the fixed 1D
  slot embedding added before the first modal block.
* :func:`sincos_position_embedding_3d` — MONAI's 3D sine-cosine table for a token grid (any shape).
* :class:`RotaryEmbedding3D` — RoPE (Su et al., "RoFormer", 2024) with the head width split between the three
  token-grid axes, so that the attention logits of the spatial blocks depend on the relative 3D offset only.

Token grids are flattened in C order ``(gx, gy, gz)`` (z fastest), the order of ``Tensor.flatten`` after the patchify
convolution; every table here uses that order.
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache

import torch
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from torch import Tensor, nn

from codebrain_seg.errors import InputError


def sinusoidal_embedding(positions: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """``[cos(p * f_i), sin(p * f_i)]`` with ``f_i = max_period ** (-i / (dim / 2))``: ``(N,) -> (N, dim)`` float32.

    Args:
        positions: timesteps or slot indices ``(N,)`` (float or integer).
        dim: even embedding width.
        max_period: lowest frequency's period.
    """
    if dim % 2:
        raise InputError(f"sinusoidal_embedding needs an even dim, got {dim}")
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half
    )
    angles = positions.float()[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


@lru_cache(maxsize=16)
def _sincos_table(grid: tuple[int, int, int], dim: int) -> Tensor:
    with warnings.catch_warnings():
        # MONAI calls torch.meshgrid without `indexing`; its default ("ij") is the C order we flatten in
        warnings.simplefilter("ignore", UserWarning)
        table = build_sincos_position_embedding(list(grid), dim, spatial_dims=3)
    return table.detach()[0].clone()


def sincos_position_embedding_3d(grid: tuple[int, int, int], dim: int) -> Tensor:
    """Fixed 3D sine-cosine positions of a token grid: ``(gx * gy * gz, dim)`` float32 on the CPU (cached).

    MONAI's ``build_sincos_position_embedding``: a third of the width per axis, sin and cos halves, temperature
    10^4. ``dim`` must be divisible by 6.
    """
    if len(grid) != 3 or any(int(size) < 1 for size in grid):
        raise InputError(f"sincos_position_embedding_3d needs a 3D grid of positive sizes, got {grid}")
    if dim % 6:
        raise InputError(f"sincos_position_embedding_3d needs dim divisible by 6, got {dim}")
    return _sincos_table(tuple(int(size) for size in grid), int(dim))


def grid_coordinates(grid: tuple[int, int, int], device: torch.device | None = None) -> Tensor:
    """Integer coordinates of a token grid in flattening order: ``(gx * gy * gz, 3)`` float32."""
    axes = [torch.arange(size, dtype=torch.float32, device=device) for size in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


class RotaryEmbedding3D(nn.Module):
    """3D RoPE: the head width is split into ``axis_dims`` (x, y, z), each rotated by its own coordinate.

    Args:
        axis_dims: even rotary widths per axis; they sum to the head width (paper: 24, 24, 16 for a 64-wide head).
        theta: RoPE base.

    :meth:`angles` gives ``(N, head_dim / 2)`` rotation angles for a grid; :meth:`apply` rotates queries or keys
    ``(..., N, head_dim)`` pairwise (channels ``2i, 2i + 1``) by them.
    """

    def __init__(self, axis_dims: tuple[int, int, int], theta: float = 10000.0) -> None:
        super().__init__()
        if len(axis_dims) != 3 or any(dim < 2 or dim % 2 for dim in axis_dims):
            raise InputError(f"RotaryEmbedding3D needs three even axis widths >= 2, got {axis_dims}")
        self.axis_dims = tuple(int(dim) for dim in axis_dims)
        self.head_dim = sum(self.axis_dims)
        inverse = [theta ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim) for dim in self.axis_dims]
        # one frequency per rotated pair; the axis each pair follows is stored beside it
        self.register_buffer("inverse_frequencies", torch.cat(inverse), persistent=False)
        self.register_buffer(
            "pair_axis",
            torch.cat([torch.full((dim // 2,), axis, dtype=torch.long) for axis, dim in enumerate(self.axis_dims)]),
            persistent=False,
        )

    def angles(self, grid: tuple[int, int, int]) -> Tensor:
        """Rotation angles ``(gx * gy * gz, head_dim / 2)`` float32 for the token grid ``grid``."""
        if len(grid) != 3:
            raise InputError(f"RotaryEmbedding3D.angles needs a 3D grid, got {grid}")
        return self.angles_at(grid_coordinates(grid, self.inverse_frequencies.device))

    def angles_at(self, coordinates: Tensor) -> Tensor:
        """Rotation angles ``(N, head_dim / 2)`` for token coordinates ``(N, 3)`` (x, y, z)."""
        return coordinates.to(self.inverse_frequencies)[:, self.pair_axis] * self.inverse_frequencies

    def stacked_angles(self, grid: tuple[int, int, int], slots: int) -> Tensor:
        """Angles ``(slots * gx * gy * gz, head_dim / 2)`` of ``slots`` grids stacked along z, slot-major order.

        The tokens of slot s sit at z + s * gz: the slots of a short-axis stack (latent slabs) are consecutive
        pieces of one volume, so attention over all of them sees true through-plane offsets.
        """
        coordinates = grid_coordinates(grid, self.inverse_frequencies.device)
        offsets = torch.zeros(slots, 1, 3, device=coordinates.device)
        offsets[:, 0, 2] = torch.arange(slots, device=coordinates.device, dtype=torch.float32) * grid[2]
        return self.angles_at((coordinates[None] + offsets).reshape(-1, 3))

    @staticmethod
    def apply(x: Tensor, angles: Tensor) -> Tensor:
        """Rotate ``x`` ``(..., N, head_dim)`` by ``angles`` ``(N, head_dim / 2)``; same shape and dtype."""
        if x.shape[-2:] != (angles.shape[0], 2 * angles.shape[1]):
            raise InputError(f"RoPE: x {tuple(x.shape)} does not match angles {tuple(angles.shape)}")
        pairs = x.float().reshape(*x.shape[:-1], -1, 2)
        cos, sin = torch.cos(angles), torch.sin(angles)
        first, second = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack([first * cos - second * sin, first * sin + second * cos], dim=-1)
        return rotated.flatten(-2).to(x.dtype)
