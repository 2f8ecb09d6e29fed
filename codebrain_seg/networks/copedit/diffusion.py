"""Missing-slot latent diffusion of CoPeDiT (Liu et al., arXiv 2602.18400, Sec. 3.3), x0 prediction, DDIM, EMA.

Only the missing modalities' latents are noised; the available ones stay clean as context, and MDiT3D predicts the
clean latents of **all** slots (MSE over all slots, following the paper and its official code). The training
schedule is MONAI's ``DDPMScheduler`` (scaled-linear betas 0.0015 -> 0.0195 over T = 500). Sampling is
deterministic DDIM (eta = 0) on that same schedule with any number of steps, and re-imposes the clean available
latents after every step (the official code builds its DDIM with T = 200 and never re-imposes them).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler
from torch import Tensor, nn

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit.config import DiffusionConfig


def _slot_mask(missing: Tensor, like: Tensor) -> Tensor:
    # (B, m) -> (B, m, 1, 1, 1, 1) so that it selects whole modality slots of (B, m, e, x, y, z)
    if missing.shape != like.shape[:2]:
        raise InputError(f"missing mask {tuple(missing.shape)} does not match latents {tuple(like.shape[:2])}")
    return missing.bool().to(like.device).reshape(*missing.shape, *(1,) * (like.dim() - 2))


class MissingSlotDiffusion:
    """Noising, loss and DDIM sampling for latents ``(B, m, e, x, y, z)`` with a missing mask ``(B, m)``.

    Args:
        config: schedule, sampling steps and latent scale. Latents passed in and returned are in CoPeVAE units;
            the scale is applied inside.
    """

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        self.scheduler = DDPMScheduler(
            num_train_timesteps=config.num_train_timesteps,
            schedule=config.schedule,
            beta_start=config.beta_start,
            beta_end=config.beta_end,
            prediction_type="sample",
            clip_sample=False,
        )
        self.alphas_cumprod = self.scheduler.alphas_cumprod.double()

    @property
    def num_train_timesteps(self) -> int:
        """T."""
        return self.config.num_train_timesteps

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> Tensor:
        """Uniform training timesteps ``(B,)`` int64 in ``[0, T)`` (drawn on the CPU for reproducibility)."""
        return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator).to(device)

    def noise_missing(self, latents: Tensor, missing: Tensor, timesteps: Tensor, noise: Tensor) -> Tensor:
        """``q(z_t | z_0)`` on the missing slots only; the available slots are returned unchanged.

        Args:
            latents: clean (scaled) latents ``(B, m, e, x, y, z)``.
            missing: ``(B, m)`` bool.
            timesteps: ``(B,)``.
            noise: same shape as ``latents``.
        """
        if noise.shape != latents.shape:
            raise InputError(f"noise {tuple(noise.shape)} does not match latents {tuple(latents.shape)}")
        noised = self.scheduler.add_noise(latents, noise, timesteps.to(latents.device))
        return torch.where(_slot_mask(missing, latents), noised, latents)

    def training_loss(self, model: nn.Module, latents: Tensor, missing: Tensor, prompts: Tensor,
                      generator: torch.Generator | None = None) -> Tensor:
        """x0-prediction MSE over all slots for random timesteps and noise.

        Args:
            model: MDiT3D, ``model(z_t, t, prompts) -> x0``.
            latents: clean latents ``(B, m, e, x, y, z)`` in CoPeVAE units.
            missing: ``(B, m)`` bool.
            prompts: ``(B, P, Dp)``.
            generator: CPU generator for timesteps and noise (None: the global RNG).
        """
        clean = latents * self.config.latent_scale
        timesteps = self.sample_timesteps(clean.shape[0], generator, clean.device)
        if generator is None:
            noise = torch.randn_like(clean)
        else:  # a CPU generator gives the same draws on any device
            noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype).to(clean.device)
        prediction = model(self.noise_missing(clean, missing, timesteps, noise), timesteps, prompts)
        return F.mse_loss(prediction.float(), clean.float())

    def sampling_timesteps(self, steps: int | None = None) -> Tensor:
        """Descending DDIM timesteps ``(steps,)`` spread evenly over ``[0, T - 1]`` of the training schedule."""
        steps = self.config.sampling_steps if steps is None else int(steps)
        if not 1 <= steps <= self.num_train_timesteps:
            raise InputError(f"DDIM steps must be in 1..{self.num_train_timesteps}, got {steps}")
        # rounding an evenly spaced grid works for any step count (MONAI's DDIM steps by T // n, which does not
        # reach the end of the schedule when n does not divide T, e.g. 200 steps of T = 500)
        return torch.linspace(self.num_train_timesteps - 1, 0, steps, dtype=torch.float64).round().long()

    @torch.no_grad()
    def sample(self, model: nn.Module, latents: Tensor, missing: Tensor, prompts: Tensor, steps: int | None = None,
               seed: int | None = 0) -> Tensor:
        """Deterministic DDIM (eta = 0) imputation of the missing slots.

        Args:
            model: MDiT3D (use the EMA weights, in eval mode).
            latents: ``(B, m, e, x, y, z)`` in CoPeVAE units; the missing slots' values are ignored.
            missing: ``(B, m)`` bool.
            prompts: ``(B, P, Dp)``.
            steps: DDIM steps (default ``config.sampling_steps``).
            seed: seed of the initial noise (None: the global RNG).

        Returns:
            Latents ``(B, m, e, x, y, z)`` in CoPeVAE units: the input's available slots exactly, the sampled
            missing ones.
        """
        scale = self.config.latent_scale
        clean = latents * scale
        mask = _slot_mask(missing, clean)
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype).to(clean.device)
        current = torch.where(mask, noise, clean)
        timesteps = self.sampling_timesteps(steps)
        alphas = self.alphas_cumprod
        for index, step in enumerate(timesteps.tolist()):
            batch_steps = torch.full((clean.shape[0],), step, dtype=torch.long, device=clean.device)
            predicted = model(current, batch_steps, prompts)
            alpha = alphas[step]
            alpha_next = alphas[timesteps[index + 1]] if index + 1 < len(timesteps) else alphas.new_tensor(1.0)
            epsilon = (current - alpha.sqrt().float() * predicted) / (1 - alpha).sqrt().float()
            current = alpha_next.sqrt().float() * predicted + (1 - alpha_next).sqrt().float() * epsilon
            current = torch.where(mask, current, clean)  # the available latents are known exactly
        return torch.where(mask, current / scale, latents)


class ExponentialMovingAverage(nn.Module):
    """EMA copy of a model's weights (decay 0.9999 in the paper); buffers are copied as they are.

    Args:
        model: the trained model; a frozen deep copy is kept in ``self.model``.
        decay: EMA decay.

    ``update(model)`` after every optimiser step; use ``ema.model`` for inference. Its ``state_dict`` is the
    averaged model's, so it goes into checkpoints like any module.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        super().__init__()
        if not 0 <= decay < 1:
            raise InputError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``ema = decay * ema + (1 - decay) * weights`` for parameters; buffers copied."""
        averaged = dict(self.model.named_parameters())
        for name, parameter in model.named_parameters():
            averaged[name].lerp_(parameter.detach().to(averaged[name].dtype), 1 - self.decay)
        averaged_buffers = dict(self.model.named_buffers())
        for name, buffer in model.named_buffers():
            averaged_buffers[name].copy_(buffer)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the averaged model."""
        return self.model(*args, **kwargs)


def available_first_order(missing: Tensor) -> Tensor:
    """Slot order ``(B, m)`` that puts the available modalities first, then the missing ones, each in index order.

    The official code's layout (one model per missing count): ``latents.gather`` / index with it before MDiT3D and
    scatter back with :func:`restore_slot_order`.
    """
    if missing.dim() != 2:
        raise InputError(f"missing mask must be (B, m), got {tuple(missing.shape)}")
    return torch.argsort(missing.long(), dim=1, stable=True)


def reorder_slots(latents: Tensor, order: Tensor) -> Tensor:
    """Permute the slots of ``(B, m, ...)`` by ``order`` ``(B, m)``: ``out[b, i] = latents[b, order[b, i]]``."""
    index = order.to(latents.device).reshape(*order.shape, *(1,) * (latents.dim() - 2)).expand_as(latents)
    return latents.gather(1, index)


def restore_slot_order(latents: Tensor, order: Tensor) -> Tensor:
    """Inverse of :func:`reorder_slots`: back to the canonical modality order."""
    return reorder_slots(latents, torch.argsort(order, dim=1))
