"""CodeBrain Stage I: learn full-stack quantised codes and a decoder that imputes from them.

Per iteration (CodeBrain, CVPR 2026, as its reference implementation trains), one availability pattern ``m`` per
batch:
``codes = FSQ(E_posterior(x))`` from the full augmented stack, ``F_c = E_c(x * m)``, ``y = D(codes, F_c)``;
the pasted-back ``x~ = y * (1 - m) + x * m`` feeds only the GAN. First the PatchGAN takes an LSGAN step
(real stack -> 1, ``x~`` -> per-channel target ``m``), then the generator minimises
``lambda_a * PSNR-loss(available) + lambda_m * PSNR-loss(missing)`` plus, after ``adversarial_start_fraction``
of the iterations, ``adversarial_weight * MSE(D(x~, x), 1)``. Validation decodes oracle codes (from the full
ground-truth stack) with F_c of the masked stack, so it is an upper bound, not imputation.

Ablations (:data:`ABLATION_SWITCHES`) only set configuration fields: the VQ quantiser adds its codebook +
commitment loss (weight 1, as in VQ-VAE) to the generator loss; ``(lambda_m, lambda_a)`` come from the plans or
the run's ``loss_weights``.

The **v1 variant** (``options.variant == 'v1'``, per-modality codes) runs the same step: the batch's pattern picks
an anchor among its missing channels and a source among its available ones
(:func:`trainers.data_loading.draw_anchor_and_source`); the generator rebuilds the anchor from its own code and F_c
of the source; the reconstructed stack is the real one with the anchor replaced, so the PatchGAN, its per-channel
targets and the loss helpers are used unchanged with the pattern "everything but the anchor given". Its
reconstruction loss is the anchor's, weighted by the plans' lambda_missing (lambda_available is 0: the other
channels are copies), so the adversarial term keeps its CVPR weight relative to the reconstruction. Validation
decodes the oracle code of every anchor with F_c of every single source (the C one-available patterns): the
source x anchor PSNR table of the v1 paper's Table 4, stored in the checkpoint as ``source_relevance`` for the
"most relevant source" inference rule.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from codebrain_seg.device import memory_format_of
from codebrain_seg.errors import InputError
from codebrain_seg.losses import (
    discriminator_loss,
    generator_adversarial_loss,
    psnr_loss_per_channel,
    reconstruction_loss_per_channel,
    weight_available_missing,
)
from codebrain_seg.metrics import slice_psnr_ssim
from codebrain_seg.networks import CodeBrainConfig, PatchDiscriminator, StageOneModel
from codebrain_seg.networks.quantizers import DEFAULT_CODEBOOK_SIZE
from codebrain_seg.variants import ABLATION_SWITCHES, CODEBRAIN_ABLATIONS, code_levels
from trainers.base_trainer import BaseTrainer
from trainers.data_loading import (
    draw_anchor_and_source,
    single_available_patterns,
    single_missing_patterns,
)

ABLATIONS = tuple(CODEBRAIN_ABLATIONS)
# Slices decoded at once during validation: bounds the memory of the full-resolution decoder stages.
VALIDATION_SLICES_PER_FORWARD = 16


def network_config(plans: dict[str, Any], configuration: dict[str, Any], ablation: str = "none",
                   variant: str = "cvpr", code_dim: int | None = None) -> CodeBrainConfig:
    """CodeBrain architecture of a plans configuration, with the ablation's switches, variant and code dimension.

    The VQ codebook size is the configuration's ``vq_codebook_size`` (plans written before it existed: 1024); the
    FSQ levels follow :func:`trainers.code_levels` (``code_dim`` x 5, v1's 7 x 5, else the plans').
    """
    if ablation not in ABLATIONS:
        raise InputError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    network = configuration["network"]
    return CodeBrainConfig(
        in_channels=len(plans["channel_names"]), variant=variant,
        fsq_levels=code_levels(variant, code_dim, configuration["fsq_levels"]),
        posterior_width=int(network["posterior_width"]), common_width=int(network["common_width"]),
        decoder_width=int(network["decoder_width"]), depth=int(network["depth"]),
        codebook_size=int(configuration.get("vq_codebook_size", DEFAULT_CODEBOOK_SIZE)),
        **ABLATION_SWITCHES[ablation])


def slice_metrics(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-slice PSNR and SSIM ``(N,)`` of ``(N, 1, H, W)`` images (MONAI, data range 1, prediction clamped)."""
    return slice_psnr_ssim(prediction.float().clamp(0, 1), target)


def pattern_name(pattern: Sequence[bool]) -> str:
    """``'1011'``-style name of an availability pattern (1 = available)."""
    return "".join("1" if available else "0" for available in pattern)


def score_patterns(batches: Sequence[Tensor], patterns: Sequence[Sequence[bool]],
                   predict: Callable[[Tensor, Tensor], Tensor], channel_names: Sequence[str],
                   decodes_per_slice: int = 1) -> dict[str, Any]:
    """Mean PSNR / SSIM of the missing channels per (pattern, missing channel) pair, over all slices.

    Args:
        batches: ground-truth stacks ``(B, C, H, W)``.
        patterns: availability patterns to score.
        predict: ``predict(x, masks)`` with ``masks`` ``(P, C)`` bool returns ``(P * B, C, H, W)``, pattern-major.
        channel_names: modality names, for the pair keys ``'<pattern>:<modality>'``.
        decodes_per_slice: decoder passes per slice and pattern (v1 decodes each missing modality separately),
            to keep the slices decoded at once near :data:`VALIDATION_SLICES_PER_FORWARD`.

    Returns:
        ``{'psnr', 'ssim'}`` (unweighted means over pairs, as the paper averages), ``'score'`` (= psnr) and
        ``'pairs'`` ``{key: {'psnr', 'ssim'}}``.
    """
    sums: dict[str, list[float]] = {}
    for x in batches:
        chunk = max(1, VALIDATION_SLICES_PER_FORWARD // (len(x) * max(1, decodes_per_slice)))
        for start in range(0, len(patterns), chunk):
            group = list(patterns[start:start + chunk])
            prediction = predict(x, torch.tensor(group, device=x.device)).float()
            for index, pattern in enumerate(group):
                output = prediction[index * len(x):(index + 1) * len(x)]
                for channel in (c for c, given in enumerate(pattern) if not given):
                    psnr, ssim = slice_metrics(output[:, channel:channel + 1], x[:, channel:channel + 1])
                    total = sums.setdefault(f"{pattern_name(pattern)}:{channel_names[channel]}", [0.0, 0.0, 0])
                    total[0] += float(psnr.sum())
                    total[1] += float(ssim.sum())
                    total[2] += len(psnr)
    pairs = {key: {"psnr": s[0] / s[2], "ssim": s[1] / s[2]} for key, s in sums.items()}
    psnr = sum(p["psnr"] for p in pairs.values()) / len(pairs)
    ssim = sum(p["ssim"] for p in pairs.values()) / len(pairs)
    return {"score": psnr, "psnr": psnr, "ssim": ssim, "pairs": pairs}


def masked_inputs(x: Tensor, masks: Tensor) -> Tensor:
    """``(B, C, H, W)`` x ``(P, C)`` bool -> zero-filled stacks ``(P * B, C, H, W)``, pattern-major, in the memory
    order of ``x``."""
    stacked = x.unsqueeze(0) * masks[:, None, :, None, None].to(x.dtype)
    return stacked.flatten(0, 1).contiguous(memory_format=memory_format_of(x))


class CodeBrainStageOneTrainer(BaseTrainer):
    """Stage I: posterior encoder + quantiser, common encoder and decoder against a per-modality PatchGAN."""

    method = "codebrain"
    stage = 1

    def build_networks(self) -> None:
        """Generator (:class:`StageOneModel`) and PatchGAN discriminator."""
        self.network_config = network_config(self.plans, self.configuration, self.options.ablation,
                                             self.options.variant, self.options.code_dim)
        self.networks = {"generator": StageOneModel(self.network_config),
                         "discriminator": PatchDiscriminator(self.num_channels)}
        loss = self.planned.loss
        self.lambda_missing, self.lambda_available = self.reconstruction_weights()
        self.per_modality = self.network_config.variant == "v1"
        if self.per_modality:
            self.lambda_available = 0.0  # v1 rebuilds only the anchor; the other channels are copies
        self.source_relevance: dict[str, dict[str, float]] | None = None
        self.adversarial_weight = loss.adversarial_weight
        self.adversarial_start = int(loss.adversarial_start_fraction * self.total_iterations)
        self.reconstruction_kind = "l1" if self.options.ablation == "l1" else "psnr"

    def configure_optimizers(self) -> None:
        """AdamW for both; the generator's learning rate is cosine-annealed, the discriminator's constant."""
        self.add_optimizer("generator", self.planned.optimizer("generator_optimizer"), cosine=True)
        self.add_optimizer("discriminator", self.planned.optimizer("discriminator_optimizer"), cosine=False)

    def extra_checkpoint(self, name: str) -> dict[str, Any]:
        """The architecture, so inference can rebuild the networks from the checkpoint alone, and the loss weights."""
        extra = {"network_config": self.network_config.to_dict(),
                 "loss_weights": {"lambda_missing": self.lambda_missing, "lambda_available": self.lambda_available}}
        if self.source_relevance is not None:
            extra["source_relevance"] = self.source_relevance
        return extra

    def train_step(self, x: Tensor, available: Tensor, iteration: int) -> dict[str, float]:
        """Discriminator step, then generator step, on one batch with one pattern."""
        generator = self.train_modules["generator"]
        discriminator = self.train_modules["discriminator"]
        losses: dict[str, float] = {}
        if self.per_modality:
            anchor, source = draw_anchor_and_source(self.options.seed, self.context.rank, iteration,
                                                    available.tolist())
            masked = x * available.to(x.dtype).view(1, -1, 1, 1)
            with self.autocast():
                rebuilt, codes, _, quantizer_loss = generator(x, masked, with_quantizer_loss=True, anchor=anchor,
                                                              source=source)
            # The real stack with the anchor replaced, judged as a pattern in which only the anchor is missing.
            reconstruction = torch.cat([x[:, :anchor], rebuilt.float(), x[:, anchor + 1:]], dim=1)
            available = torch.arange(self.num_channels, device=x.device) != anchor
        mask = available.to(x.dtype).view(1, -1, 1, 1)
        masked = x * mask
        if not self.per_modality:
            with self.autocast():
                reconstruction, codes, _, quantizer_loss = generator(x, masked, with_quantizer_loss=True)
        reconstruction = reconstruction.float()
        pasted = reconstruction * (1 - mask) + masked

        # Real and fake in one forward: InstanceNorm is per sample, so this equals two separate passes.
        with self.autocast():
            scores = discriminator(torch.cat([x, pasted.detach()]), torch.cat([x, x]))
        loss_d = discriminator_loss(scores[:len(x)], scores[len(x):], available)
        self.optimizer_step("discriminator", loss_d)

        per_channel = reconstruction_loss_per_channel(reconstruction, x, self.reconstruction_kind)
        loss_rec = weight_available_missing(per_channel, available, self.lambda_available, self.lambda_missing)
        with torch.no_grad():  # the unweighted group means, so the lambdas can be read off the log
            group_means = [weight_available_missing(per_channel.detach(), available, *weights).item()
                           for weights in ((1.0, 0.0), (0.0, 1.0))]
        losses.update(loss_d=loss_d.item(), loss_rec=loss_rec.detach().item(), loss_rec_missing=group_means[1])
        if not self.per_modality:  # v1's available channels are copies of the input: nothing to report
            losses["loss_rec_available"] = group_means[0]
        loss_g = loss_rec
        if self.network_config.quantizer == "vq":
            loss_g = loss_g + quantizer_loss
            losses["loss_vq"] = quantizer_loss.detach().item()
            with torch.no_grad():
                used = self.networks["generator"].quantizer.codes_to_levels(codes.detach()).unique().numel()
            losses["codebook_used"] = used / self.network_config.codebook_size
        if iteration + 1 > self.adversarial_start:
            plain = self.networks["discriminator"]  # outside DDP: no gradient sync for a frozen network
            plain.requires_grad_(False)
            with self.autocast():
                loss_adv = generator_adversarial_loss(plain(pasted, x))
            plain.requires_grad_(True)
            loss_g = loss_g + self.adversarial_weight * loss_adv
            losses["loss_adv"] = loss_adv.detach().item()
        self.optimizer_step("generator", loss_g)
        losses["loss_g"] = loss_g.detach().item()
        with torch.no_grad():
            psnr = -psnr_loss_per_channel(reconstruction.detach(), x)
            losses["train_psnr_missing"] = float(psnr[~available].mean())
        return losses

    @torch.inference_mode()
    def validate(self) -> dict[str, Any]:
        """Mean PSNR / SSIM decoding oracle codes (upper bound): over the single-missing patterns (cvpr), or over
        every (source, anchor) pair (v1; also sets the ``source_relevance`` table of the checkpoint)."""
        model = self.networks["generator"]

        def predict(x: Tensor, masks: Tensor) -> Tensor:
            with self.autocast():
                codes = model.encode_codes(x)
                repeated = codes.repeat(len(masks), 1, 1, 1)
                available = masks.repeat_interleave(len(x), dim=0)
                return model.impute_from_codes(repeated, masked_inputs(x, masks), available)

        if not self.per_modality:
            return score_patterns(self.validation_batches(), single_missing_patterns(self.num_channels), predict,
                                  self.channel_names)
        patterns = single_available_patterns(self.num_channels)
        metrics = score_patterns(self.validation_batches(), patterns, predict, self.channel_names,
                                 decodes_per_slice=self.num_channels - 1)
        names, pairs = self.channel_names, metrics["pairs"]
        self.source_relevance = {
            names[s]: {names[a]: pairs[f"{pattern_name(patterns[s])}:{names[a]}"]["psnr"]
                       for a in range(len(names)) if a != s}
            for s in range(len(names))}
        metrics["source_relevance"] = self.source_relevance
        return metrics
