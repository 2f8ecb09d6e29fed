"""Finite Scalar Quantisation (Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple", ICLR 2024).

CodeBrain quantises the posterior encoder output channel by channel: channel ``i`` is squashed into
``L_i`` integer bins with a bounded tanh and rounded with a straight-through estimator. There is no
learnable codebook and no auxiliary loss; the implicit codebook is the product of the levels
(8*8*8*5*5*5 = 64,000 for the paper setting).

Three equivalent representations of one code vector are used in the project:

* ``codes``: floats in [-1, 1], ``q / floor(L/2)`` with ``q`` the rounded integer (what the decoder sees);
* ``levels``: integers ``k`` in ``0 .. L-1`` (the targets of the Stage-II prior encoder);
* ``indices``: one flat integer per position, ``sum_i k_i * basis_i`` with
  ``basis = cumprod([1] + levels[:-1])`` (used to log codebook usage).

Every per-channel constant is a ``(d,)`` buffer broadcast over ``(B, d, *spatial)``, so no method loops
over channels.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from codebrain_seg.errors import InputError

PAPER_LEVELS: tuple[int, ...] = (8, 8, 8, 5, 5, 5)


def round_ste(values: Tensor) -> Tensor:
    """Round half-to-even in the forward pass; identity gradient in the backward pass."""
    return values + (torch.round(values) - values).detach()


def _per_channel(constant: Tensor, like: Tensor) -> Tensor:
    """View a ``(d,)`` constant as ``(1, d, 1, ..., 1)`` so it broadcasts over ``like`` (dim 1 = channels)."""
    shape = [1] * like.dim()
    shape[1] = constant.numel()
    return constant.to(device=like.device).view(shape)


class FSQ(nn.Module):
    """Finite scalar quantiser over the channel dimension (dim 1) of a feature map.

    Args:
        levels: number of quantisation levels ``L_i`` per channel, each >= 2.
        eps: margin that keeps the bounded tanh strictly inside the outermost bins (reference: 1e-3).

    Shapes: inputs ``z`` and ``codes`` are ``(B, d, *spatial)`` with ``d = len(levels)``; ``levels``
    tensors have the same shape with integer values; ``indices`` are ``(B, *spatial)``.
    """

    def __init__(self, levels: Sequence[int] = PAPER_LEVELS, eps: float = 1e-3) -> None:
        super().__init__()
        levels = tuple(int(level) for level in levels)
        if not levels or any(level < 2 for level in levels):
            raise InputError(f"FSQ levels must be a non-empty sequence of integers >= 2, got {levels}")
        self.levels: tuple[int, ...] = levels
        self.eps = float(eps)
        counts = torch.tensor(levels, dtype=torch.float64)
        half_range = (counts - 1) * (1 + self.eps) / 2  # tanh amplitude
        offset = torch.where(counts % 2 == 0, 0.5, 0.0)  # even L: bins are centred on half-integers
        shift = torch.atanh(offset / half_range)  # keeps bound(0) = 0, i.e. z = 0 lands on code 0
        basis = torch.cumprod(torch.tensor((1,) + levels[:-1], dtype=torch.int64), dim=0)
        # Derived from `levels`, so not persistent: checkpoints stay free of constants.
        self.register_buffer("_level_counts", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("_half_width", torch.floor(counts / 2).float(), persistent=False)
        self.register_buffer("_half_range", half_range.float(), persistent=False)
        self.register_buffer("_offset", offset.float(), persistent=False)
        self.register_buffer("_shift", shift.float(), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def num_channels(self) -> int:
        """Number of code channels ``d``."""
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        """Size of the implicit codebook, ``prod(levels)``."""
        return math.prod(self.levels)

    @property
    def basis(self) -> Tensor:
        """Flat-index weights ``(d,)``: cumulative product of the levels, starting at 1."""
        return self._basis

    def extra_repr(self) -> str:
        """Levels and eps for ``print(model)``."""
        return f"levels={list(self.levels)}, eps={self.eps}"

    def _check_channels(self, tensor: Tensor, name: str) -> None:
        if tensor.dim() < 2 or tensor.shape[1] != self.num_channels:
            raise InputError(
                f"{name} must have {self.num_channels} channels in dim 1 (levels {list(self.levels)}), "
                f"got shape {tuple(tensor.shape)}"
            )

    def bound(self, z: Tensor) -> Tensor:
        """Squash ``z`` into ``(-floor(L/2) - eps', ceil(L/2) - 1 + eps')`` per channel (fp32, differentiable).

        Args:
            z: pre-quantisation features ``(B, d, *spatial)``.

        Returns:
            Bounded features ``(B, d, *spatial)`` in float32, not yet rounded.
        """
        self._check_channels(z, "z")
        z = z.float()
        return torch.tanh(z + _per_channel(self._shift, z)) * _per_channel(self._half_range, z) - _per_channel(
            self._offset, z
        )

    def quantize(self, z: Tensor) -> Tensor:
        """Quantise features to codes in [-1, 1] with a straight-through round (always computed in fp32).

        Args:
            z: pre-quantisation features ``(B, d, *spatial)``.

        Returns:
            Codes ``(B, d, *spatial)`` float32, on the grid ``q / floor(L/2)``.
        """
        with torch.autocast(device_type=z.device.type, enabled=False):
            rounded = round_ste(self.bound(z))
            return rounded / _per_channel(self._half_width, rounded)

    def forward(self, z: Tensor) -> Tensor:
        """Alias of :meth:`quantize`."""
        return self.quantize(z)

    def quantize_with_loss(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Codes and a zero auxiliary loss (FSQ needs none; same interface as the VQ ablation's quantiser)."""
        codes = self.quantize(z)
        return codes, codes.new_zeros(())

    @property
    def target_classes(self) -> tuple[int, ...]:
        """Classes per Stage-II target channel: the levels ``L_i``."""
        return self.levels

    def codes_to_levels(self, codes: Tensor) -> Tensor:
        """Map codes on the grid to integer levels ``k = (code + 1) * floor(L/2)`` in ``0 .. L-1`` (int64)."""
        self._check_channels(codes, "codes")
        half_width = _per_channel(self._half_width, codes)
        return torch.round(codes.float() * half_width + half_width).long()

    def levels_to_codes(self, levels: Tensor) -> Tensor:
        """Map integer levels ``k`` to codes ``(k - floor(L/2)) / floor(L/2)`` (float32)."""
        self._check_channels(levels, "levels")
        half_width = _per_channel(self._half_width, levels)
        return (levels.float() - half_width) / half_width

    def levels_to_indices(self, levels: Tensor) -> Tensor:
        """Flatten integer levels ``(B, d, *spatial)`` to codebook indices ``(B, *spatial)`` (int64)."""
        self._check_channels(levels, "levels")
        return (levels.long() * _per_channel(self._basis, levels)).sum(dim=1)

    def indices_to_levels(self, indices: Tensor) -> Tensor:
        """Expand codebook indices ``(B, *spatial)`` to integer levels ``(B, d, *spatial)`` (int64)."""
        indices = indices.long().unsqueeze(1)
        return torch.div(indices, _per_channel(self._basis, indices), rounding_mode="floor") % _per_channel(
            self._level_counts, indices
        )

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codes ``(B, d, *spatial)`` -> flat codebook indices ``(B, *spatial)``."""
        return self.levels_to_indices(self.codes_to_levels(codes))

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Flat codebook indices ``(B, *spatial)`` -> codes ``(B, d, *spatial)``."""
        return self.levels_to_codes(self.indices_to_levels(indices))

    def all_levels(self) -> Tensor:
        """Every code of the implicit codebook as integer levels ``(codebook_size, d)``, in index order."""
        indices = torch.arange(self.codebook_size, device=self._basis.device)
        return self.indices_to_levels(indices)
