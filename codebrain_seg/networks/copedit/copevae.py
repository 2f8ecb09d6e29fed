"""CoPeVAE: the completeness-perception tokenizer of CoPeDiT (Liu et al., arXiv 2602.18400, Sec. 3.2, Fig. 2).

A single-channel MONAI ``VQVAE`` (EMA codebook) is shared by all modalities: every modality volume is encoded on
its own (modalities folded into the batch axis, no modality embedding). Three prompt encoders F1-F3 (k3 conv, BN,
ReLU, k3 conv, BN, ReLU, global average pool, two-layer MLP) map each available modality's **continuous**
latent to a prompt token; a subject's prompt is the mean over its available modalities (the sum with
``prompt_pooling='sum'``). Three heads turn them
into the pretext tasks:

* H1 (SiLU, Linear -> m - 1): how many modalities are missing;
* H2 (SiLU, Linear -> m): which ones (multi-label);
* H3 (SiLU, Linear -> contrastive_dim) on F3 of the available set (anchor) and of the missing set (positive).

The prompts given to MDiT3D are ``[F1(S), F2(S), F3(S)]`` ``(B, 3, prompt_dim)``; the heads are used only by the
pretext losses. Diffusion runs on the continuous pre-quantisation latents; quantisation happens before decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import VQVAE
from torch import Tensor, nn

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit.config import CoPeVAEConfig


class PromptEncoder(nn.Module):
    """One prompt encoder F_k: ``(N, e, x, y, z)`` latent -> ``(N, prompt_dim)`` token.

    Args:
        latent_channels: e.
        conv_widths: widths of the two k3 convolutions (each followed by BatchNorm and ReLU).
        hidden: hidden width of the MLP after global average pooling.
        prompt_dim: output width.
    """

    def __init__(self, latent_channels: int, conv_widths: tuple[int, int], hidden: int, prompt_dim: int) -> None:
        super().__init__()
        first, second = conv_widths
        self.features = nn.Sequential(
            nn.Conv3d(latent_channels, first, kernel_size=3, padding=1),
            nn.BatchNorm3d(first),
            nn.ReLU(inplace=True),
            nn.Conv3d(first, second, kernel_size=3, padding=1),
            nn.BatchNorm3d(second),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(1),
        )
        self.mlp = nn.Sequential(nn.Linear(second, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, prompt_dim))

    def forward(self, latents: Tensor) -> Tensor:
        """``(N, e, x, y, z)`` -> ``(N, prompt_dim)``."""
        return self.mlp(self.features(latents))


def _head(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), nn.Linear(in_features, out_features))


def check_missing_mask(missing: Tensor, batch: int, num_modalities: int) -> Tensor:
    """Validate a missing mask ``(B, m)`` (bool or 0/1) with 1..m-1 missing per row; returns it as bool."""
    if missing.shape != (batch, num_modalities):
        raise InputError(f"missing mask must be ({batch}, {num_modalities}), got {tuple(missing.shape)}")
    missing = missing.bool()
    counts = missing.sum(dim=1)
    if bool(((counts < 1) | (counts > num_modalities - 1)).any()):
        raise InputError(f"every case needs 1..{num_modalities - 1} missing modalities, got counts {counts.tolist()}")
    return missing


@dataclass
class CoPeVAEOutput:
    """Everything one CoPeVAE training pass produces.

    Attributes:
        reconstruction: ``(B, m, X, Y, Z)`` decoded from the quantised latents of all modalities.
        vq_loss: scalar VQ commitment loss (the EMA codebook needs no codebook term).
        latents: continuous latents ``(B, m, e, x, y, z)``.
        prompts: ``(B, 3, prompt_dim)``: ``[F1(S), F2(S), F3(S)]``.
        count_logits: ``(B, m - 1)`` H1 logits (class c - 1 means c missing).
        position_logits: ``(B, m)`` H2 logits (1 = missing).
        anchor: ``(B, contrastive_dim)`` H3(F3(S)), not normalised.
        positive: ``(B, contrastive_dim)`` H3(F3(C)), not normalised.
    """

    reconstruction: Tensor
    vq_loss: Tensor
    latents: Tensor
    prompts: Tensor
    count_logits: Tensor
    position_logits: Tensor
    anchor: Tensor
    positive: Tensor


class CoPeVAE(nn.Module):
    """CoPeVAE-B (defaults) and smaller variants: shared single-channel VQVAE + prompt encoders + pretext heads.

    Args:
        config: architecture (:class:`CoPeVAEConfig`).

    Volumes are ``(B, m, X, Y, Z)`` with X, Y, Z divisible by ``config.compression``; latents are
    ``(B, m, e, X/8, Y/8, Z/8)`` for three levels.
    """

    def __init__(self, config: CoPeVAEConfig) -> None:
        super().__init__()
        self.config = config
        levels = len(config.channels)
        self.autoencoder = VQVAE(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=config.channels,
            num_res_layers=config.num_res_layers,
            num_res_channels=config.num_res_channels,
            downsample_parameters=((2, 4, 1, 1),) * levels,
            upsample_parameters=((2, 4, 1, 1, 0),) * levels,
            num_embeddings=config.num_embeddings,
            embedding_dim=config.embedding_dim,
            commitment_cost=config.commitment_cost,
            decay=config.decay,
            use_checkpointing=config.use_checkpointing,
        )
        self.prompt_encoders = nn.ModuleList(
            PromptEncoder(config.embedding_dim, config.prompt_conv_widths, config.prompt_hidden, config.prompt_dim)
            for _ in range(3)
        )
        m = config.num_modalities
        self.count_head = _head(config.prompt_dim, m - 1)
        self.position_head = _head(config.prompt_dim, m)
        self.contrastive_head = _head(config.prompt_dim, config.contrastive_dim)

    @property
    def codebook_perplexity(self) -> float:
        """Perplexity of the codebook assignments of the last quantisation (codebook usage, 1..num_embeddings)."""
        return float(self.autoencoder.quantizer.perplexity)

    def _check_volumes(self, volumes: Tensor) -> None:
        m, factor = self.config.num_modalities, self.config.compression
        if volumes.dim() != 5 or volumes.shape[1] != m:
            raise InputError(f"CoPeVAE volumes must be (B, {m}, X, Y, Z), got {tuple(volumes.shape)}")
        if any(size % factor for size in volumes.shape[2:]):
            raise InputError(f"CoPeVAE volume size {tuple(volumes.shape[2:])} is not divisible by {factor}")

    def encode(self, volumes: Tensor) -> Tensor:
        """Continuous (pre-quantisation) latents ``(B, m, e, x, y, z)`` of volumes ``(B, m, X, Y, Z)``."""
        self._check_volumes(volumes)
        batch, slots = volumes.shape[:2]
        latents = self.autoencoder.encode(volumes.reshape(batch * slots, 1, *volumes.shape[2:]))
        return latents.reshape(batch, slots, *latents.shape[1:])

    def quantize(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """EMA-codebook quantisation of ``(B, m, e, x, y, z)`` latents: ``(quantised latents, VQ loss)``.

        In training mode MONAI's EMA quantiser also updates the codebook.
        """
        quantized, loss = self.autoencoder.quantize(latents.flatten(0, 1))
        return quantized.reshape(latents.shape), loss

    def decode(self, latents: Tensor) -> Tensor:
        """Quantise and decode latents ``(B, m, e, x, y, z)`` -> volumes ``(B, m, X, Y, Z)``."""
        batch, slots = latents.shape[:2]
        quantized, _ = self.quantize(latents)
        volumes = self.autoencoder.decode(quantized.flatten(0, 1))
        return volumes.reshape(batch, slots, *volumes.shape[2:])

    def _subset_prompt(self, encoder: nn.Module, latents: Tensor, selected: Tensor) -> Tensor:
        # only the selected modalities go through F_k (so BatchNorm sees exactly them); mean (or sum) per case
        batch = latents.shape[0]
        if bool((selected.sum(dim=1) == 0).any()):
            raise InputError("every case needs at least one selected modality to form a prompt")
        tokens = encoder(latents[selected])  # (n_selected, prompt_dim), rows in (case, modality) order
        case_index = selected.nonzero()[:, 0]
        sums = torch.zeros(batch, tokens.shape[1], device=tokens.device, dtype=tokens.dtype)
        sums = sums.index_add(0, case_index, tokens)
        if self.config.prompt_pooling == "sum":
            return sums
        return sums / selected.sum(dim=1, keepdim=True).to(tokens.dtype)

    def prompts(self, latents: Tensor, available: Tensor) -> Tensor:
        """Completeness prompts ``(B, 3, prompt_dim)`` from the latents of the available modalities.

        Args:
            latents: ``(B, m, e, x, y, z)``; the missing slots' values are never read.
            available: ``(B, m)`` bool, True where a modality was given.
        """
        if available.shape != latents.shape[:2]:
            raise InputError(f"available mask {tuple(available.shape)} does not match latents "
                             f"{tuple(latents.shape[:2])}")
        available = available.bool()
        return torch.stack([self._subset_prompt(encoder, latents, available) for encoder in self.prompt_encoders], 1)

    def forward(self, volumes: Tensor, missing: Tensor) -> CoPeVAEOutput:
        """Stage-I pass: reconstruct all modalities and solve the pretext tasks for the sampled missing pattern.

        Args:
            volumes: complete stack ``(B, m, X, Y, Z)``.
            missing: ``(B, m)`` bool, the synthetic missing set C (1..m-1 per case); S is its complement.

        Returns:
            :class:`CoPeVAEOutput`.
        """
        self._check_volumes(volumes)
        missing = check_missing_mask(missing, volumes.shape[0], self.config.num_modalities).to(volumes.device)
        latents = self.encode(volumes)
        quantized, vq_loss = self.quantize(latents)
        decoded = self.autoencoder.decode(quantized.flatten(0, 1))
        reconstruction = decoded.reshape(volumes.shape)
        prompts = self.prompts(latents, ~missing)
        positive = self._subset_prompt(self.prompt_encoders[2], latents, missing)
        return CoPeVAEOutput(
            reconstruction=reconstruction,
            vq_loss=vq_loss,
            latents=latents,
            prompts=prompts,
            count_logits=self.count_head(prompts[:, 0]),
            position_logits=self.position_head(prompts[:, 1]),
            anchor=self.contrastive_head(prompts[:, 2]),
            positive=self.contrastive_head(positive),
        )


def sample_missing_masks(batch: int, num_modalities: int, generator: torch.Generator | None = None,
                         same_count: bool = False) -> Tensor:
    """Dual-random missing patterns ``(B, m)`` bool: a count c in 1..m-1, then c modalities uniformly.

    Args:
        batch: B.
        num_modalities: m (>= 2).
        generator: CPU random generator (for reproducible patterns).
        same_count: draw c once for the whole batch (the official code) instead of once per case.
    """
    if num_modalities < 2 or batch < 1:
        raise InputError(f"sample_missing_masks needs batch >= 1 and num_modalities >= 2, got {batch}, "
                         f"{num_modalities}")
    counts = torch.randint(1, num_modalities, (1 if same_count else batch,), generator=generator).expand(batch)
    # a random permutation gives every modality a distinct random label 0..m-1: labels below c are missing
    labels = torch.rand(batch, num_modalities, generator=generator).argsort(dim=1)
    return labels < counts[:, None]
