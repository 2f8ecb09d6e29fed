"""CoPeDiT Stage I: the CoPeVAE tokenizer (CoPeDiT, arXiv 2602.18400) on the one training loop.

Each iteration takes a batch of complete, augmented 3D cases and gives every case its own random missing set C
(1..m-1 sequences; reference decision 4; for a cardiac stack a consecutive run of 1..m-1 slabs,
``trainers.copedit.common``). The generator loss is ``L1 + VQ (+ perceptual, only with local weights)
+ 0.01 LSGAN + 0.01 (Ld + 0.5 Lp + 0.5 Lc)`` (``codebrain_seg.networks.copedit.losses``); the MONAI patch
discriminator is trained with the least-squares loss from the first iteration. Both optimisers clip the gradient
norm to 1.0 and follow a warmup-cosine schedule per iteration.

Validation on the fold's validation cases: reconstruction PSNR / SSIM of every sequence (quantised decode), and
the pretext heads' accuracy over every missing pattern (count: the argmax class; position: every sequence's
missing / given decision). The score is the reconstruction PSNR.

**Codebook restarts** (plans ``optimisation.codebook_restart``, on in ``3d_copedit_cpu`` only): every ``every``
iterations (during the first ``until`` fraction of the run) the codebook entries whose EMA count fell below
``threshold`` are re-seeded with random latents of the batch. Not in the paper: the small CPU network otherwise
collapses onto a single entry.

**More pretext patterns** (plans ``optimisation.pretext_patterns_per_case``, CPU configuration only): the count and
position losses are averaged over the batch's pattern and that many more random patterns of the same latents.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from codebrain_seg.networks.copedit import (
    CoPeVAE,
    CoPeVAELoss,
    build_discriminator,
    missing_count_loss,
    missing_position_loss,
    slabs_to_stack,
)
from trainers.base_trainer import BaseTrainer
from trainers.copedit.common import (
    add_warmup_cosine_optimizer,
    all_missing_masks,
    check_copedit_options,
    copedit_config,
    iteration_generator,
    iteration_missing_masks,
    volume_psnr,
    volume_ssim,
)
from trainers.copedit.data import load_volumes, volume_batches

RESTART_STREAM = 5  # random stream of the codebook restarts (rank 0's draw on every rank)
EXTRA_PATTERN_STREAM = 6  # random stream of the additional pretext patterns


@torch.no_grad()
def restart_dead_codes(vae: CoPeVAE, latents: Tensor, threshold: float, generator: torch.Generator) -> int:
    """Re-seed the EMA codebook entries used less than ``threshold`` (EMA count) with random latent vectors.

    A small VQVAE starts with latents far smaller than MONAI's N(0, 1) codebook and collapses onto one entry
    (perplexity 1: the decoder sees one constant code); restarting dead entries from the current batch's
    continuous latents ``(B, m, e, x, y, z)`` (as Jukebox does) keeps the codebook in use. Returns how many were
    restarted. Under DDP every rank must pass the same ``generator`` state; the vectors are rank 0's.
    """
    quantizer = vae.autoencoder.quantizer.quantizer
    dead = (quantizer.ema_cluster_size < threshold).nonzero()[:, 0]
    if len(dead) == 0:
        return 0
    flat = latents.detach().float().movedim(2, -1).reshape(-1, latents.shape[2])
    chosen = torch.randint(0, len(flat), (len(dead),), generator=generator).to(flat.device)
    vectors = flat[chosen].to(quantizer.embedding.weight.dtype)
    if torch.distributed.is_initialized():
        torch.distributed.broadcast(vectors, src=0)
    quantizer.embedding.weight.data[dead] = vectors
    quantizer.ema_w.data[dead] = vectors
    quantizer.ema_cluster_size.data[dead] = 1.0
    return int(len(dead))


@torch.no_grad()
def pretext_accuracy(vae: CoPeVAE, volumes: list[np.ndarray], device: torch.device,
                     elements: str = "modalities") -> dict[str, float]:
    """Accuracy of the count and position heads over every missing pattern of complete cases ``(m, X, Y, Z)``
    (``elements='slices'``: every consecutive run of slabs).

    Returns ``count_accuracy`` (argmax of H1 = the number missing), ``position_accuracy`` (H2's sign per sequence),
    ``position_exact`` (all sequences right), and the chance levels ``count_chance`` (always the most frequent
    count) and ``position_chance`` (0.5).
    """
    vae.eval()
    masks = all_missing_masks(vae.config.num_modalities, elements).to(device)
    counts = masks.sum(dim=1) - 1
    correct = {"count": 0.0, "position": 0.0, "exact": 0.0}
    for volume in volumes:
        latents = vae.encode(torch.from_numpy(np.asarray(volume, np.float32))[None].to(device))
        latents = latents.expand(len(masks), *latents.shape[1:])
        prompts = vae.prompts(latents, ~masks)
        count = vae.count_head(prompts[:, 0]).argmax(dim=1)
        position = vae.position_head(prompts[:, 1]) > 0
        correct["count"] += float((count == counts).float().mean())
        correct["position"] += float((position == masks).float().mean())
        correct["exact"] += float((position == masks).all(dim=1).float().mean())
    n = max(len(volumes), 1)
    majority = float(torch.bincount(counts.cpu()).max()) / len(masks)
    return {"count_accuracy": correct["count"] / n, "position_accuracy": correct["position"] / n,
            "position_exact": correct["exact"] / n, "count_chance": majority, "position_chance": 0.5}


class CoPeVAETrainer(BaseTrainer):
    """CoPeDiT Stage I (``method = 'copedit'``, ``stage = 1``): CoPeVAE and its patch discriminator."""

    method = "copedit"
    stage = 1
    memory_format = torch.contiguous_format
    # bf16 on an AMX CPU (torch 2.13, oneDNN): the backward of CoPeVAE's 3D decoder convolutions gave NaN gradients
    # within ~60-200 iterations of the cardiac configuration, every step from then on, while fp32 trained; GPUs keep
    # bf16 ("auto"), and --precision bf16 still asks for it explicitly.
    cpu_auto_bf16 = False

    def check_prerequisites(self) -> None:
        """A 3D-volume configuration and no CodeBrain-only option."""
        check_copedit_options(self)

    def draw_pattern(self, iteration: int) -> Tensor:
        """Unused: every case draws its own missing set in :meth:`train_step` (a cardiac stack has one channel)."""
        return torch.ones(self.config.vae.num_modalities, dtype=torch.bool)

    def build_networks(self) -> None:
        """CoPeVAE and the discriminator of the configuration; the loss (perceptual term only with local weights)."""
        self.config = copedit_config(self.configuration, "none")
        self.networks = {"vae": CoPeVAE(self.config.vae), "discriminator": build_discriminator(self.config.vae)}
        self.loss = CoPeVAELoss(self.config.vae, stacked_slabs=self.config.elements == "slices").to(self.device)
        self.max_grad_norm = float(self.planned.optimisation_option("gradient_clip", 1.0))
        self.restart = self.planned.optimisation_option("codebook_restart") or {}
        self.extra_patterns = int(self.planned.optimisation_option("pretext_patterns_per_case", 0))

    def configure_optimizers(self) -> None:
        """Adam with warmup-cosine for both networks (plans ``vae_optimizer`` / ``discriminator_optimizer``)."""
        add_warmup_cosine_optimizer(self, "vae", self.planned.optimizer("vae_optimizer"))
        add_warmup_cosine_optimizer(self, "discriminator", self.planned.optimizer("discriminator_optimizer"))

    def extra_checkpoint(self, name: str) -> dict[str, Any]:
        """The architecture, so that Stage II and inference rebuild CoPeVAE from the checkpoint alone."""
        return {"copedit_config": self.config.to_dict()}

    def training_stream(self) -> Iterator[dict[str, Any]]:
        """Augmented complete volumes ``(B, m, X, Y, Z)`` (``trainers.copedit.data.volume_batches``)."""
        augmentation = None if self.options.extra.get("no_augmentation") else \
            self.planned.optimisation_option("augmentation")
        return volume_batches(self.data_folder, self.split["train"], self.batch_size, self.options.seed,
                              self.context.rank, self.context.world_size, self.iteration, augmentation)

    def train_step(self, x: Tensor, available: Tensor, iteration: int) -> dict[str, float]:
        """One CoPeVAE + discriminator step; each case gets its own missing set (``available`` is not used)."""
        missing = iteration_missing_masks(self.options.seed, self.context.rank, iteration, len(x),
                                          self.config.vae.num_modalities,
                                          elements=self.config.elements).to(self.device)
        vae, discriminator = self.train_modules["vae"], self.train_modules["discriminator"]
        # The generator loss goes through the bare discriminator (under DDP its wrapper would wait for gradients
        # that this pass must not produce) with its weights frozen, so no gradient is left in D.
        plain_discriminator = self.networks["discriminator"].requires_grad_(False)
        with self.autocast():
            output = vae(x, missing)
            parts = self.loss.generator_losses(output, x, missing, plain_discriminator)
            if self.extra_patterns:
                self._add_extra_patterns(parts, output.latents, iteration)
        grad_norm = self.optimizer_step("vae", parts["total"], self.max_grad_norm)
        restarted = 0
        every = int(self.restart.get("every", 0))
        if every and iteration % every == 0 and iteration < self.total_iterations * self.restart.get("until", 1.0):
            generator = iteration_generator(self.options.seed, 0, iteration, RESTART_STREAM)
            restarted = restart_dead_codes(self.networks["vae"], output.latents, float(self.restart["threshold"]),
                                           generator)
        plain_discriminator.requires_grad_(True)
        with self.autocast():
            d_loss = self.loss.discriminator_loss(discriminator, x, output.reconstruction.float())
        self.optimizer_step("discriminator", d_loss, self.max_grad_norm)
        with torch.no_grad():
            count_correct = output.count_logits.argmax(dim=1) == missing.sum(dim=1) - 1
            position_correct = (output.position_logits > 0) == missing
        losses = {f"loss_{key}": float(value.detach()) for key, value in parts.items()}
        losses.update(loss_discriminator=float(d_loss.detach()), grad_norm=grad_norm,
                      train_count_accuracy=float(count_correct.float().mean()),
                      train_position_accuracy=float(position_correct.float().mean()),
                      codebook_perplexity=self.networks["vae"].codebook_perplexity, codes_restarted=restarted)
        return losses

    def _add_extra_patterns(self, parts: dict[str, Tensor], latents: Tensor, iteration: int) -> None:
        """Count and position losses averaged over the batch's own pattern and ``extra_patterns`` more per case.

        The prompt encoders are cheap next to the VQVAE, so more missing patterns of the same latents give the
        pretext heads more samples per step (plans ``pretext_patterns_per_case``; the CPU configuration only).
        """
        config, k = self.config.vae, self.extra_patterns
        vae = self.networks["vae"]
        masks = iteration_missing_masks(self.options.seed, self.context.rank, iteration, len(latents) * k,
                                        config.num_modalities, stream=EXTRA_PATTERN_STREAM,
                                        elements=self.config.elements).to(latents.device)
        prompts = vae.prompts(latents.repeat_interleave(k, dim=0), ~masks)
        extra = {"count": missing_count_loss(vae.count_head(prompts[:, 0]), masks, config.count_loss),
                 "position": missing_position_loss(vae.position_head(prompts[:, 1]), masks)}
        for name, weight in (("count", config.count_weight), ("position", config.position_weight)):
            combined = (parts[name] + k * extra[name]) / (1 + k)
            parts["total"] = parts["total"] + config.pretext_weight * weight * (combined - parts[name])
            parts[name] = combined

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """Reconstruction PSNR / SSIM (all sequences, quantised decode; a cardiac case: its re-stacked volume) and
        pretext accuracy on validation cases."""
        vae: CoPeVAE = self.networks["vae"]
        cases = self.split["val"] or self.split["train"][:1]
        volumes = load_volumes(self.data_folder, cases)
        psnrs, ssims = [], []
        for volume in volumes:
            x = torch.from_numpy(np.asarray(volume, np.float32))[None].to(self.device)
            with self.autocast():
                reconstruction = vae.decode(vae.encode(x)).float().clamp(0, 1)
            if self.config.elements == "slices":  # the re-stacked volume (a slab is thinner than the SSIM window)
                reconstruction, x = slabs_to_stack(reconstruction)[:, None], slabs_to_stack(x)[:, None]
            psnrs += volume_psnr(reconstruction[0], x[0]).tolist()
            ssims += [volume_ssim(reconstruction[0, c], x[0, c]) for c in range(x.shape[1])]
        metrics: dict[str, Any] = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}
        metrics.update(pretext_accuracy(vae, volumes, self.device, self.config.elements))
        metrics["score"] = metrics["psnr"]
        return metrics
