"""CoPeVAE losses (Liu et al., arXiv 2602.18400, Sec. 3.2; weights of the official code).

Generator: ``w_rec * L1 + w_vq * VQ + w_perc * perceptual + w_adv * LSGAN + lambda * (Ld + 0.5 Lp + 0.5 Lc)`` with

* Ld — missing count, cross-entropy over m - 1 classes (the paper; ``count_loss='bce'`` is the official code's
  one-hot BCE);
* Lp — missing position, multi-label BCE over the m modalities;
* Lc — contrastive missing-modality assessment: ``H3(F3(S))`` against ``H3(F3(C))``, L2-normalised, logits
  ``cosine / tau`` (tau 0.2), one-directional cross-entropy with the batch's other cases as negatives.

The adversarial term uses MONAI's ``PatchDiscriminator`` on single-modality volumes and ``PatchAdversarialLoss``
(least squares). The perceptual term (MONAI ``PerceptualLoss``, 2.5D ResNet-50) exists only when a local weights
file is configured: nothing is downloaded, and without it the term is absent.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator
from torch import Tensor, nn

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit.cardiac import slabs_to_stack
from codebrain_seg.networks.copedit.config import CoPeVAEConfig
from codebrain_seg.networks.copedit.copevae import CoPeVAEOutput

logger = logging.getLogger(__name__)


def missing_count_loss(logits: Tensor, missing: Tensor, kind: str = "ce") -> Tensor:
    """Task 1: ``(B, m - 1)`` logits against the number of missing modalities of ``missing`` ``(B, m)``.

    Args:
        logits: H1 output; class k means k + 1 missing.
        missing: ``(B, m)`` bool.
        kind: ``'ce'`` cross-entropy or ``'bce'`` BCE against the one-hot target.
    """
    if logits.shape != (missing.shape[0], missing.shape[1] - 1):
        raise InputError(f"count logits {tuple(logits.shape)} do not match a missing mask {tuple(missing.shape)}")
    target = missing.sum(dim=1).long() - 1
    if kind == "ce":
        return F.cross_entropy(logits.float(), target)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), F.one_hot(target, logits.shape[1]).float())
    raise InputError(f"missing_count_loss kind must be 'ce' or 'bce', got {kind!r}")


def missing_position_loss(logits: Tensor, missing: Tensor) -> Tensor:
    """Task 2: multi-label BCE of ``(B, m)`` logits against the missing mask ``(B, m)``."""
    if logits.shape != missing.shape:
        raise InputError(f"position logits {tuple(logits.shape)} do not match the mask {tuple(missing.shape)}")
    return F.binary_cross_entropy_with_logits(logits.float(), missing.float())


def contrastive_assessment_loss(anchor: Tensor, positive: Tensor, temperature: float = 0.2) -> Tensor:
    """Task 3: InfoNCE of anchors ``(B, k)`` against positives ``(B, k)``; the other cases' positives are negatives.

    Cosine similarities divided by ``temperature``; cross-entropy from each anchor to the positives only (not
    symmetric). With B = 1 the loss is 0 (one candidate).
    """
    if anchor.shape != positive.shape or anchor.dim() != 2:
        raise InputError(f"anchor and positive must both be (B, k), got {tuple(anchor.shape)}, "
                         f"{tuple(positive.shape)}")
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature!r}")
    logits = F.normalize(anchor.float(), dim=1) @ F.normalize(positive.float(), dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(anchor.shape[0], device=anchor.device))


def pretext_losses(output: CoPeVAEOutput, missing: Tensor, config: CoPeVAEConfig) -> dict[str, Tensor]:
    """The three pretext losses ``{'count', 'position', 'contrastive'}`` of one CoPeVAE pass."""
    missing = missing.to(output.count_logits.device).bool()
    return {
        "count": missing_count_loss(output.count_logits, missing, config.count_loss),
        "position": missing_position_loss(output.position_logits, missing),
        "contrastive": contrastive_assessment_loss(output.anchor, output.positive, config.temperature),
    }


def build_discriminator(config: CoPeVAEConfig) -> PatchDiscriminator:
    """MONAI ``PatchDiscriminator`` on single-channel 3D volumes (its last output is the patch logits)."""
    return PatchDiscriminator(
        spatial_dims=3,
        channels=config.discriminator_channels,
        in_channels=1,
        out_channels=1,
        num_layers_d=config.discriminator_layers,
    )


def build_perceptual_loss(config: CoPeVAEConfig) -> nn.Module | None:
    """MONAI 2.5D ``PerceptualLoss`` (ResNet-50) from the local weights file, or None when none is configured.

    A configured file that does not exist disables the term with a warning rather than downloading anything.
    """
    if config.perceptual_weights is None or config.perceptual_weight == 0:
        return None
    path = Path(config.perceptual_weights)
    if not path.is_file():
        logger.warning("perceptual loss disabled: weights file %s does not exist (nothing is downloaded)", path)
        return None
    from monai.losses import PerceptualLoss  # lazy: its backbone needs torchvision, only with local weights

    loss = PerceptualLoss(
        spatial_dims=3,
        network_type="resnet50",
        is_fake_3d=True,
        fake_3d_ratio=config.perceptual_slice_fraction,
        pretrained=True,
        pretrained_path=str(path),
    )
    return loss.requires_grad_(False).eval()


class CoPeVAELoss(nn.Module):
    """Generator and discriminator losses of CoPeVAE training.

    Args:
        config: loss weights, temperature and the perceptual weights file.
        stacked_slabs: the slots are consecutive slabs of one short-axis stack (``elements='slices'``): the
            discriminator and the perceptual net then see the whole re-stacked volume ``(X, Y, m * Z)`` (the
            paper's CoPeVAE-C input), not each thin slab on its own.

    ``generator_losses(output, volumes, missing, discriminator)`` returns the weighted total and its parts;
    ``discriminator_loss(discriminator, volumes, reconstruction)`` the LSGAN discriminator loss.
    """

    def __init__(self, config: CoPeVAEConfig, stacked_slabs: bool = False) -> None:
        super().__init__()
        self.config = config
        self.stacked_slabs = stacked_slabs
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")
        self.perceptual = build_perceptual_loss(config)

    def _single_channel(self, volumes: Tensor) -> Tensor:
        # (B, m, X, Y, Z) -> (B*m, 1, X, Y, Z): the discriminator and the perceptual net see one modality at a time;
        # slabs of a stack: (B, 1, X, Y, m*Z), the stack itself
        if self.stacked_slabs:
            return slabs_to_stack(volumes)[:, None]
        return volumes.reshape(-1, 1, *volumes.shape[2:])

    def generator_losses(self, output: CoPeVAEOutput, volumes: Tensor, missing: Tensor,
                         discriminator: nn.Module | None = None) -> dict[str, Tensor]:
        """Weighted generator loss ``'total'`` and its unweighted parts.

        Args:
            output: the CoPeVAE pass.
            volumes: the complete stack ``(B, m, X, Y, Z)`` it reconstructs.
            missing: ``(B, m)`` the pattern the pass was given.
            discriminator: the patch discriminator, or None to leave the adversarial term out.
        """
        config = self.config
        if output.reconstruction.shape != volumes.shape:
            raise InputError(f"reconstruction {tuple(output.reconstruction.shape)} does not match the volumes "
                             f"{tuple(volumes.shape)}")
        parts = {"l1": F.l1_loss(output.reconstruction.float(), volumes.float()), "vq": output.vq_loss.float()}
        parts.update(pretext_losses(output, missing, config))
        total = (config.reconstruction_weight * parts["l1"] + config.vq_weight * parts["vq"]
                 + config.pretext_weight * (config.count_weight * parts["count"]
                                            + config.position_weight * parts["position"]
                                            + config.contrastive_weight * parts["contrastive"]))
        fake = self._single_channel(output.reconstruction)
        if self.perceptual is not None:
            parts["perceptual"] = self.perceptual(fake.float(), self._single_channel(volumes).float())
            total = total + config.perceptual_weight * parts["perceptual"]
        if discriminator is not None:
            parts["adversarial"] = self.adversarial(discriminator(fake)[-1], target_is_real=True,
                                                    for_discriminator=False)
            total = total + config.adversarial_weight * parts["adversarial"]
        parts["total"] = total
        return parts

    def discriminator_loss(self, discriminator: nn.Module, volumes: Tensor, reconstruction: Tensor) -> Tensor:
        """LSGAN discriminator loss, the mean of its real and (detached) fake terms."""
        real = discriminator(self._single_channel(volumes))[-1]
        fake = discriminator(self._single_channel(reconstruction.detach()))[-1]
        return 0.5 * (self.adversarial(real, target_is_real=True, for_discriminator=True)
                      + self.adversarial(fake, target_is_real=False, for_discriminator=True))
