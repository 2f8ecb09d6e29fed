"""CoPeDiT Stage II: MDiT3D on cached CoPeVAE latents (CoPeDiT, arXiv 2602.18400).

The finished Stage-I CoPeVAE is frozen. The continuous latents of every training and validation case, and the
per-sequence prompt tokens, are computed once and cached on disk (``trainers.copedit.data``); the latents are
scaled to unit standard deviation over the training cases and the factor is stored (reference decision 6).

Each iteration draws cached cases and a missing set per case (per count layout: one count per batch), forms the
prompts (learned: mean of the available sequences' tokens; mask option: binary mask codes), noises only the
missing latents at a random timestep and trains MDiT3D to predict the clean latents of all slots (MSE, x0
prediction). The EMA weights (decay from the plans) are updated after every step and saved in every checkpoint;
inference uses them.

Validation: deterministic DDIM imputation (EMA weights, fixed seed) of the single-missing patterns of the
validation cases (a cardiac stack: every consecutive run of 1..m-1 slabs), decoded by the frozen CoPeVAE; PSNR /
SSIM of the missing sequences at the configuration's volume size (slabs: PSNR over the missing run's slices, SSIM
per 2D slice, since a slab is thinner than the 3D SSIM window), beside zero-fill's PSNR. The score is the PSNR.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.metrics import slice_psnr_ssim
from codebrain_seg.networks.copedit import (
    CoPeDiTConfig,
    CoPeVAE,
    ExponentialMovingAverage,
    MDiT3D,
    MissingSlotDiffusion,
    available_first_order,
    mask_code_prompts,
    reorder_slots,
    restore_slot_order,
)
from trainers.base_trainer import BaseTrainer
from trainers.copedit.common import (
    ablation_switches,
    add_warmup_cosine_optimizer,
    all_missing_masks,
    check_copedit_options,
    copedit_config,
    iteration_generator,
    iteration_missing_masks,
    volume_psnr,
    volume_ssim,
)
from trainers.copedit.data import build_latent_cache, latent_batches, load_volumes

STAGE1_CHECKPOINT = "checkpoint_final.pth"
NOISE_STREAM = 4  # random stream of the diffusion timesteps and noise
VALIDATION_SEED = 0


class CoPeDiTStageOneNotFinishedError(MissingFileError):
    """Raised when Stage II is started before Stage I wrote its final checkpoint."""


def load_copevae(path: Path, device: torch.device) -> tuple[CoPeVAE, CoPeDiTConfig, dict[str, Any]]:
    """The frozen CoPeVAE of a Stage-I checkpoint (eval mode, no gradients), its config and the checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("method") != "copedit" or state.get("stage") != 1:
        raise InputError(f"{path} is not a CoPeDiT Stage-I checkpoint (method {state.get('method')!r}, stage "
                         f"{state.get('stage')!r})")
    config = CoPeDiTConfig.from_dict(state["copedit_config"])
    vae = CoPeVAE(config.vae)
    vae.load_state_dict(state["networks"]["vae"])
    return vae.to(device).eval().requires_grad_(False), config, state


class PerCountMDiT3D(nn.Module):
    """The paper's layout: one MDiT3D per missing count c = 1..m-1 (``models[c - 1]``), slots available first.

    Under DDP only one of the models is used per step: the trainer wraps it with ``find_unused_parameters``.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.models = nn.ModuleList(MDiT3D(config) for _ in range(config.num_modalities - 1))

    def forward(self, latents: Tensor, timesteps: Tensor, prompts: Tensor, count: int) -> Tensor:
        """x0 prediction by the model of ``count`` missing sequences (latents in available-first order)."""
        if not 1 <= count <= len(self.models):
            raise InputError(f"missing count must be in 1..{len(self.models)}, got {count}")
        return self.models[count - 1](latents, timesteps, prompts)


def prompts_from_tokens(tokens: Tensor, missing: Tensor, prompt_source: str, pooling: str = "mean") -> Tensor:
    """Prompts ``(B, P, Dp)``: the mean (or sum, CoPeVAE's ``prompt_pooling``) of the available sequences' tokens
    ``(B, 3, m, Dp)`` — what ``CoPeVAE.prompts`` gives in eval mode — or mask codes."""
    if prompt_source == "mask":
        return mask_code_prompts(missing)
    weights = (~missing).to(tokens.dtype)[:, None, :, None]
    sums = (tokens * weights).sum(dim=2)
    return sums if pooling == "sum" else sums / weights.sum(dim=2).clamp_min(1.0)


class MissingSlotModel:
    """Runs the shared or per-count MDiT3D on canonical-order latents (per count: reordered and restored)."""

    def __init__(self, network: nn.Module, per_count: bool) -> None:
        self.network, self.per_count = network, per_count

    def model_for(self, missing: Tensor) -> tuple[Any, Tensor | None]:
        """The model callable ``(z_t, t, prompts) -> x0`` for a batch's missing masks, and the available-first
        order (None for the shared model)."""
        if not self.per_count:
            return self.network, None
        counts = missing.sum(dim=1).unique()
        if len(counts) != 1:
            raise InputError(f"the per-count layout needs one missing count per batch, got {counts.tolist()}")
        count = int(counts[0])
        return (lambda z, t, p: self.network(z, t, p, count)), available_first_order(missing)


class MDiT3DTrainer(BaseTrainer):
    """CoPeDiT Stage II (``method = 'copedit'``, ``stage = 2``): MDiT3D with missing-slot diffusion and EMA."""

    method = "copedit"
    stage = 2
    memory_format = torch.contiguous_format

    @property
    def stage1_checkpoint(self) -> Path:
        """Final Stage-I checkpoint (``extra['stage_dirs']['1']``, else the sibling ``stage1`` folder)."""
        folder = Path(self.options.extra.get("stage_dirs", {}).get("1", self.output_dir.parent / "stage1"))
        return folder / STAGE1_CHECKPOINT

    def check_prerequisites(self) -> None:
        """A 3D-volume configuration and a finished Stage I."""
        check_copedit_options(self)
        if not self.stage1_checkpoint.is_file():
            raise CoPeDiTStageOneNotFinishedError(
                f"CoPeDiT Stage II needs the finished Stage I, but {self.stage1_checkpoint} does not exist: run "
                "codebrain_train --method copedit with --stage 1 (or --stage all) for this dataset, fold and "
                "configuration first")

    def build_networks(self) -> None:
        """Frozen CoPeVAE, the latent cache (built once, by rank 0), the latent scale, MDiT3D(s) and the EMA."""
        self.vae, stage1_config, stage1_state = load_copevae(self.stage1_checkpoint, self.device)
        self.prompt_source, self.layout = ablation_switches(self.options.ablation)
        planned = copedit_config(self.configuration, self.options.ablation)
        if stage1_config.vae != planned.vae:
            raise InputError(f"{self.stage1_checkpoint} holds a CoPeVAE other than the plans' for "
                             f"{self.configuration_name}: retrain Stage I")
        self.stage1_info = {"checkpoint": str(self.stage1_checkpoint), "iteration": int(stage1_state["iteration"])}
        cases = list(self.split["train"]) + [c for c in self.split["val"] if c not in self.split["train"]]
        cache_dir = self.output_dir / "latent_cache"
        if self.is_main:
            build_latent_cache(cache_dir, self.vae, self.data_folder, cases, self.device, self.stage1_info)
        if self.context.world_size > 1:
            torch.distributed.barrier()
        latents, tokens = build_latent_cache(cache_dir, self.vae, self.data_folder, cases, self.device,
                                             self.stage1_info)
        train = len(self.split["train"])
        self.train_latents, self.train_tokens = latents[:train], tokens[:train]
        self.val_cases = [c for c in self.split["val"]] or self.split["train"][:1]
        index = {case: i for i, case in enumerate(cases)}
        self.val_latents = latents[[index[c] for c in self.val_cases]]
        self.val_tokens = tokens[[index[c] for c in self.val_cases]]
        # unit standard deviation of the training latents (reference decision 6); stored in the checkpoint
        scale = 1.0 / max(float(self.train_latents.std()), 1e-6)
        diffusion = planned.diffusion.to_dict()
        diffusion["latent_scale"] = scale
        self.config = CoPeDiTConfig.from_dict({**planned.to_dict(), "diffusion": diffusion})
        self.diffusion = MissingSlotDiffusion(self.config.diffusion)
        torch.manual_seed(self.options.seed + 2)  # MDiT3D's initial weights do not depend on Stage I's draws
        network: nn.Module = PerCountMDiT3D(self.config.dit) if self.layout == "per_count" else MDiT3D(self.config.dit)
        self.networks = {"dit": network}
        self.max_grad_norm = float(self.planned.optimisation_option("gradient_clip", 1.0))

    def prepare_module(self, name: str, module: nn.Module) -> nn.Module:
        """As the base, except that under DDP the per-count layout lets the unused models' weights be."""
        if self.layout != "per_count" or self.context.world_size == 1:
            return super().prepare_module(name, module)
        ids = [self.device.index] if self.device.type == "cuda" else None
        wrapped: nn.Module = nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)
        if self.compiled:
            wrapped = torch.compile(wrapped)
        self.train_modules[name] = wrapped
        return wrapped

    def configure_optimizers(self) -> None:
        """AdamW with warmup-cosine (plans ``dit_optimizer``); the EMA copy starts from the initial weights."""
        add_warmup_cosine_optimizer(self, "dit", self.planned.optimizer("dit_optimizer"))
        self.ema = ExponentialMovingAverage(self.networks["dit"], self.config.diffusion.ema_decay).to(self.device)

    def extra_checkpoint(self, name: str) -> dict[str, Any]:
        """Config (with the latent scale), EMA weights, layout, Stage-I provenance; best / final also the CoPeVAE."""
        extra: dict[str, Any] = {"copedit_config": self.config.to_dict(), "ema": self.ema.model.state_dict(),
                                 "layout": self.layout, "stage1_checkpoint": self.stage1_info["checkpoint"],
                                 "stage1_iteration": self.stage1_info["iteration"]}
        if name in ("checkpoint_best.pth", "checkpoint_final.pth"):
            extra["frozen_networks"] = {"vae": self.vae.state_dict()}
        return extra

    def load_checkpoint(self, path: Path) -> None:
        """The base state plus the EMA weights."""
        super().load_checkpoint(path)
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.ema.model.load_state_dict(state["ema"])

    def draw_pattern(self, iteration: int) -> Tensor:
        """Unused: every case draws its own missing set in :meth:`train_step` (a cardiac stack has one channel)."""
        return torch.ones(self.config.dit.num_modalities, dtype=torch.bool)

    def training_stream(self) -> Iterator[dict[str, Any]]:
        """Cached latents and prompt tokens of the training cases."""
        return latent_batches(self.train_latents, self.train_tokens, self.split["train"], self.batch_size,
                              self.options.seed, self.context.rank, self.context.world_size, self.iteration)

    def prepare_batch(self, batch: dict[str, Any]) -> Tensor:
        """Latents on the device; the batch's prompt tokens are kept for :meth:`train_step`."""
        self._tokens = torch.from_numpy(batch["tokens"]).to(self.device)
        return torch.from_numpy(batch["data"]).to(self.device)

    def train_step(self, x: Tensor, available: Tensor, iteration: int) -> dict[str, float]:
        """One x0-prediction step on latents ``(B, m, e, x, y, z)`` with per-case missing sets."""
        per_count = self.layout == "per_count"
        missing = iteration_missing_masks(self.options.seed, self.context.rank, iteration, len(x),
                                          self.config.dit.num_modalities, same_count=per_count,
                                          elements=self.config.elements).to(self.device)
        prompts = prompts_from_tokens(self._tokens, missing, self.prompt_source, self.config.vae.prompt_pooling)
        model, order = MissingSlotModel(self.train_modules["dit"], per_count).model_for(missing)
        latents, slot_missing = x, missing
        if order is not None:
            latents, slot_missing = reorder_slots(x, order), reorder_slots(missing, order)
        generator = iteration_generator(self.options.seed, self.context.rank, iteration, NOISE_STREAM)
        with self.autocast():
            loss = self.diffusion.training_loss(model, latents, slot_missing, prompts, generator)
        grad_norm = self.optimizer_step("dit", loss, self.max_grad_norm)
        self.ema.update(self.networks["dit"])
        return {"loss_x0": float(loss.detach()), "grad_norm": grad_norm}

    @torch.no_grad()
    def impute_latents(self, network: nn.Module, latents: Tensor, missing: Tensor, tokens: Tensor,
                       steps: int | None = None, seed: int = VALIDATION_SEED) -> Tensor:
        """DDIM-impute the missing slots of canonical-order latents ``(B, m, e, x, y, z)``."""
        prompts = prompts_from_tokens(tokens, missing, self.prompt_source, self.config.vae.prompt_pooling)
        model, order = MissingSlotModel(network, self.layout == "per_count").model_for(missing)
        if order is None:
            return self.diffusion.sample(model, latents, missing, prompts, steps, seed)
        sampled = self.diffusion.sample(model, reorder_slots(latents, order), reorder_slots(missing, order),
                                        prompts, steps, seed)
        return restore_slot_order(sampled, order)

    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        """PSNR / SSIM of DDIM imputation (EMA weights) of the validation patterns of the validation cases: each single
        missing sequence (brain), every consecutive run of slabs (a cardiac stack)."""
        if self.config.elements == "slices":
            return self._validate_runs()
        m = self.config.dit.num_modalities
        volumes = load_volumes(self.data_folder, self.val_cases)
        psnrs, ssims, zero = [], [], []
        network = self.ema.model.eval()
        for index, volume in enumerate(volumes):
            target = torch.from_numpy(np.asarray(volume, np.float32)).to(self.device)
            latents = torch.from_numpy(self.val_latents[index]).to(self.device)[None].expand(m, -1, -1, -1, -1, -1)
            tokens = torch.from_numpy(self.val_tokens[index]).to(self.device)[None].expand(m, -1, -1, -1)
            missing = torch.eye(m, dtype=torch.bool, device=self.device)
            with self.autocast():
                sampled = self.impute_latents(network, latents.float(), missing, tokens.float())
                decoded = self.vae.decode(sampled.float()).float().clamp(0, 1)  # (m cases, m, X, Y, Z)
            for channel in range(m):
                psnrs.append(float(volume_psnr(decoded[channel, channel], target[channel])))
                ssims.append(volume_ssim(decoded[channel, channel], target[channel]))
                zero.append(float(volume_psnr(torch.zeros_like(target[channel]), target[channel])))
        return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "zero_fill_psnr": float(np.mean(zero)),
                "score": float(np.mean(psnrs))}

    def _validate_runs(self) -> dict[str, Any]:
        """The cardiac validation: every run of 1..m-1 missing slabs, scored over the missing slabs' slices."""
        masks = all_missing_masks(self.config.dit.num_modalities, "slices").to(self.device)
        volumes = load_volumes(self.data_folder, self.val_cases)
        psnrs, ssims, zero = [], [], []
        network = self.ema.model.eval()
        for index, volume in enumerate(volumes):
            target = torch.from_numpy(np.asarray(volume, np.float32)).to(self.device)
            count = len(masks)
            latents = torch.from_numpy(self.val_latents[index]).to(self.device)[None].expand(count, -1, -1, -1, -1, -1)
            tokens = torch.from_numpy(self.val_tokens[index]).to(self.device)[None].expand(count, -1, -1, -1)
            with self.autocast():
                sampled = self.impute_latents(network, latents.float(), masks, tokens.float())
                decoded = self.vae.decode(sampled.float()).float().clamp(0, 1)  # (patterns, m, X, Y, Z)
            for row, missing in enumerate(masks):
                # the missing slabs' slices side by side along z; SSIM per 2D slice (a slab is too thin for 3D)
                filled = torch.cat(list(decoded[row, missing]), dim=-1)
                truth = torch.cat(list(target[missing]), dim=-1)
                psnrs.append(float(volume_psnr(filled[None], truth[None])[0]))
                _, slice_ssim = slice_psnr_ssim(filled.permute(2, 0, 1)[:, None], truth.permute(2, 0, 1)[:, None])
                ssims.append(float(slice_ssim.mean()))
                zero.append(float(volume_psnr(torch.zeros_like(truth)[None], truth[None])[0]))
        return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "zero_fill_psnr": float(np.mean(zero)),
                "score": float(np.mean(psnrs))}
