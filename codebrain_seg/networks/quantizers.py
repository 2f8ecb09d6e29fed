"""Code quantisers of the ablations: a learned VQ codebook and continuous (unquantised) codes.

CodeBrain's default is FSQ (:mod:`codebrain_seg.networks.fsq`). The paper's Fig. 6 compares it with other
condition designs; these two modules let the Stage-I generator swap the quantiser by configuration
(``CodeBrainConfig.quantizer``) while the decoder, the trainers and the predictor keep one code path.

Every quantiser has the same interface (FSQ included):

* ``quantize(z)`` / ``forward(z)``: encoder output ``(B, d, h, w)`` -> code map the decoder takes ``(B, d, h, w)``;
* ``quantize_with_loss(z)``: ``(codes, auxiliary loss)``; the loss is 0 except for VQ;
* ``codes_to_levels(codes)`` / ``levels_to_codes(levels)``: code map <-> Stage-II targets ("levels"):
  FSQ integer levels ``(B, d, h, w)``; VQ codebook indices ``(B, 1, h, w)``; continuous codes unchanged;
* ``target_classes``: number of classes per target channel (FSQ ``levels``, VQ ``(K,)``, continuous ``()``).

VQ (van den Oord et al., "Neural Discrete Representation Learning", NeurIPS 2017): nearest-neighbour assignment
to a learned codebook of ``K`` entries of dimension d, straight-through gradient, codebook + commitment loss
(beta 0.25; :func:`codebrain_seg.losses.vector_quantization_loss`). The codebook is trained by that loss, not by
EMA updates: gradients are averaged across DDP ranks like every other parameter, whereas EMA statistics would
need their own all-reduce. The encoder output is bounded with tanh before the assignment so that VQ, FSQ and
continuous codes all live in the same cube ``[-1, 1]^d`` (the decoder sees inputs of the same scale, and the
ablation changes only how that cube is discretised: a fixed grid of ``prod(L_i)`` points vs ``K`` learned
points vs none); the codebook starts uniform in that cube.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codebrain_seg.errors import InputError
from codebrain_seg.losses import vector_quantization_loss

# 2^10 entries: a usual VQ-VAE/VQGAN codebook size, at which a plain VQ codebook is still well used (large ones
# collapse onto few entries, the motivation of FSQ), and small enough for Stage II's per-cell K-way softmax:
# FSQ's 64,000 implicit codes as VQ classes would need a 768 x 64,000 head (49M weights) and 4 GB of logits for
# a 16-slice batch of 32 x 32 code maps; K = 1024 needs 0.8M weights and 67 MB.
DEFAULT_CODEBOOK_SIZE = 1024
DEFAULT_COMMITMENT_WEIGHT = 0.25


def _check_channels(tensor: Tensor, channels: int, name: str) -> None:
    if tensor.dim() < 2 or tensor.shape[1] != channels:
        raise InputError(f"{name} must have {channels} channels in dim 1, got shape {tuple(tensor.shape)}")


class VectorQuantizer(nn.Module):
    """Learned codebook of ``codebook_size`` vectors of dimension ``dim`` (see module docstring).

    Args:
        codebook_size: number of entries K (>= 2).
        dim: code dimension d (channels of the encoder output).
        commitment_weight: beta of the commitment term.

    Shapes: ``z`` and codes ``(B, d, *spatial)``; levels (indices) ``(B, 1, *spatial)`` int64.
    """

    def __init__(self, codebook_size: int = DEFAULT_CODEBOOK_SIZE, dim: int = 6,
                 commitment_weight: float = DEFAULT_COMMITMENT_WEIGHT) -> None:
        super().__init__()
        if codebook_size < 2 or dim < 1 or commitment_weight < 0:
            raise InputError(f"VectorQuantizer needs codebook_size >= 2, dim >= 1, commitment_weight >= 0; got "
                             f"{codebook_size}, {dim}, {commitment_weight}")
        self.codebook_size, self.dim, self.commitment_weight = int(codebook_size), int(dim), float(commitment_weight)
        self.codebook = nn.Parameter(torch.empty(self.codebook_size, self.dim).uniform_(-1.0, 1.0))

    @property
    def num_channels(self) -> int:
        """Code dimension d."""
        return self.dim

    @property
    def target_classes(self) -> tuple[int, ...]:
        """One target channel (the index) with K classes."""
        return (self.codebook_size,)

    def extra_repr(self) -> str:
        """Codebook size, dimension and beta for ``print(model)``."""
        return f"codebook_size={self.codebook_size}, dim={self.dim}, commitment_weight={self.commitment_weight}"

    def bound(self, z: Tensor) -> Tensor:
        """``tanh(z)`` in float32: the encoder output in the shared code cube ``(-1, 1)^d``."""
        _check_channels(z, self.dim, "z")
        return torch.tanh(z.float())

    def nearest_indices(self, vectors: Tensor) -> Tensor:
        """Index ``(B, *spatial)`` (int64) of the nearest codebook entry to each vector ``(B, d, *spatial)``."""
        _check_channels(vectors, self.dim, "vectors")
        flat = vectors.detach().float().movedim(1, -1).reshape(-1, self.dim)
        codebook = self.codebook.detach().float()
        # |x - e|^2 = |x|^2 - 2 x.e + |e|^2; |x|^2 is the same for every entry, so it is left out of the argmin.
        distances = codebook.square().sum(dim=1)[None, :] - 2.0 * flat @ codebook.t()
        return distances.argmin(dim=1).view(vectors.shape[0], *vectors.shape[2:])

    def lookup(self, indices: Tensor) -> Tensor:
        """Codebook entries ``(B, d, *spatial)`` (differentiable w.r.t. the codebook) of indices ``(B, *spatial)``."""
        if indices.dtype.is_floating_point or (indices.numel() and (int(indices.min()) < 0 or
                                                                    int(indices.max()) >= self.codebook_size)):
            raise InputError(f"codebook indices must be integers in 0 .. {self.codebook_size - 1}")
        return self._entries(indices)

    def _entries(self, indices: Tensor) -> Tensor:
        # Unchecked lookup for indices made by nearest_indices (a range check would sync the GPU every step).
        return F.embedding(indices.long(), self.codebook.float()).movedim(-1, 1)

    def quantize_with_loss(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Codes (nearest entries, straight-through) ``(B, d, *spatial)`` and the codebook + commitment loss."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            bounded = self.bound(z)
            quantized = self._entries(self.nearest_indices(bounded))
            loss = vector_quantization_loss(bounded, quantized, self.commitment_weight)
            # Forward value exactly the entry (bounded - bounded is 0 exactly); backward identity to tanh(z).
            codes = quantized.detach() + (bounded - bounded.detach())
        return codes, loss

    def quantize(self, z: Tensor) -> Tensor:
        """Codes ``(B, d, *spatial)`` float32: each position replaced by its nearest codebook entry."""
        return self.quantize_with_loss(z)[0]

    def forward(self, z: Tensor) -> Tensor:
        """Alias of :meth:`quantize`."""
        return self.quantize(z)

    def codes_to_levels(self, codes: Tensor) -> Tensor:
        """Codebook indices ``(B, 1, *spatial)`` int64 of a code map (exact for codes that are entries)."""
        return self.nearest_indices(codes).unsqueeze(1)

    def levels_to_codes(self, levels: Tensor) -> Tensor:
        """Code map ``(B, d, *spatial)`` float32 of codebook indices ``(B, 1, *spatial)``."""
        _check_channels(levels, 1, "codebook indices")
        return self.lookup(levels[:, 0])


class ContinuousCode(nn.Module):
    """No quantisation: the code is the bounded encoder output ``tanh(z)`` (the paper's "continuous" condition).

    Args:
        dim: code dimension d.
    """

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        if dim < 1:
            raise InputError(f"ContinuousCode needs dim >= 1, got {dim}")
        self.dim = int(dim)

    @property
    def num_channels(self) -> int:
        """Code dimension d."""
        return self.dim

    @property
    def target_classes(self) -> tuple[int, ...]:
        """No classes: Stage II regresses the code."""
        return ()

    def quantize(self, z: Tensor) -> Tensor:
        """``tanh(z)`` ``(B, d, *spatial)`` in float32."""
        _check_channels(z, self.dim, "z")
        with torch.autocast(device_type=z.device.type, enabled=False):
            return torch.tanh(z.float())

    def quantize_with_loss(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Codes and a zero auxiliary loss."""
        codes = self.quantize(z)
        return codes, codes.new_zeros(())

    def forward(self, z: Tensor) -> Tensor:
        """Alias of :meth:`quantize`."""
        return self.quantize(z)

    def codes_to_levels(self, codes: Tensor) -> Tensor:
        """Stage-II targets are the codes themselves (float32)."""
        _check_channels(codes, self.dim, "codes")
        return codes.float()

    def levels_to_codes(self, levels: Tensor) -> Tensor:
        """The predicted codes are used as they are (float32)."""
        _check_channels(levels, self.dim, "codes")
        return levels.float()
