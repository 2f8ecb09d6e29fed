"""CodeBrain Stage II: predict the Stage-I codes from the masked stack (CodeBrain, CVPR 2026).

The finished Stage-I generator is frozen (eval mode, no gradients, not optimised). A prior encoder, started from
Stage I's common encoder E_c (``prior_init='common_encoder'``, the default; ``'random'`` as the reference), reads
the zero-filled stack ``x * m`` and is trained with the ordinal grading loss (or cross-entropy for the 'cls'
ablation) against the integer levels of ``FSQ(E_posterior(x))`` of the same augmented batch. Validation is
real imputation: ``y = D(decode(E_prior(x * m)), E_c(x * m))`` with the predictor's default decoding (expected
levels), scored on the missing channels.

In the v1 variant the targets are the concatenated per-modality codes of all C modalities (available ones
included, as in the v1 paper) and validation decodes each missing modality from its predicted code with F_c of a
randomly chosen given one (a fixed seed, so validations are comparable). The Stage-I ``source_relevance`` table
is carried into this stage's checkpoints for inference.

The head follows the Stage-I quantiser: a VQ codebook has no order among its entries, so grading does not apply
and the codebook index of each code cell is classified (cross-entropy over K); continuous codes are regressed
with L1 (:func:`codebrain_seg.losses.code_regression_loss`) and reported as a code MAE instead of an accuracy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from codebrain_seg.checkpoints import load_checkpoint
from codebrain_seg.device import preferred_memory_format
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.losses import classification_loss, code_regression_loss, grading_loss
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder, StageOneModel
from codebrain_seg.networks.codebrain import HEADS_BY_QUANTIZER
from codebrain_seg.variants import code_levels
from trainers.base_trainer import BaseTrainer
from trainers.data_loading import single_missing_patterns
from trainers.stage1 import masked_inputs, score_patterns

STAGE1_CHECKPOINT = "checkpoint_final.pth"


class StageOneNotFinishedError(MissingFileError):
    """Raised when Stage II is started before Stage I wrote its final checkpoint."""


def load_stage_one(path: Path, device: torch.device,
                   memory_format: torch.memory_format | None = None) -> tuple[StageOneModel, dict[str, Any]]:
    """The frozen Stage-I generator of a checkpoint (eval mode, no gradients) and the checkpoint's metadata."""
    state = load_checkpoint(path, expect={"stage": 1}, keys=("networks.generator", "network_config"),
                            what="CodeBrain Stage I checkpoint")
    model = StageOneModel(CodeBrainConfig.from_dict(state["network_config"]))
    model.load_state_dict(state["networks"]["generator"])
    model.to(device, memory_format=memory_format or preferred_memory_format(device)).eval().requires_grad_(False)
    return model, state


def impute(generator: StageOneModel, prior: PriorEncoder, masked: Tensor, available: Tensor | None = None,
           source_generator: torch.Generator | None = None, decoding: str = "expected") -> Tensor:
    """Real imputation: all modalities ``(B, C, H, W)`` from the zero-filled stack ``(B, C, H, W)``.

    ``available`` (``(C,)`` or ``(B, C)`` bool) and ``source_generator`` matter for v1 only (random sources; the
    given channels default to those of each slice that are not all zero); ``decoding`` as in
    :meth:`PriorEncoder.logits_to_levels` (the predictor's default).
    """
    levels = prior.logits_to_levels(prior(masked), decoding)
    return generator.impute_from_codes(generator.levels_to_codes(levels), masked, available,
                                       generator=source_generator)


def warm_start(prior: PriorEncoder, generator: StageOneModel) -> bool:
    """Copy Stage I's common encoder E_c into the prior encoder's encoder; False (nothing copied) where they differ.

    E_c already reads the zero-filled stack through the same encoder architecture (the cvpr layout), so only the
    1x1 code head starts fresh. No F_c, or the v1 layout (E_c reads one sequence, E_prior the stack): nothing.
    """
    if generator.common_encoder is None:
        return False
    source, target = generator.common_encoder.state_dict(), prior.encoder.state_dict()
    if any(key not in target or target[key].shape != value.shape for key, value in source.items()):
        return False
    prior.encoder.load_state_dict(source, strict=False)  # the head (``projection``) is the one key not in E_c
    return True


class CodeBrainStageTwoTrainer(BaseTrainer):
    """Stage II: the prior encoder learns to grade each code channel from the masked stack."""

    method = "codebrain"
    stage = 2

    @property
    def stage1_checkpoint(self) -> Path:
        """Final Stage-I checkpoint this stage builds on (``extra['stage_dirs']['1']``, else the sibling folder)."""
        folder = Path(self.options.extra.get("stage_dirs", {}).get("1", self.output_dir.parent / "stage1"))
        return folder / STAGE1_CHECKPOINT

    def check_prerequisites(self) -> None:
        """Refuse to start before Stage I has finished."""
        if not self.stage1_checkpoint.is_file():
            raise StageOneNotFinishedError(
                f"Stage II needs the finished Stage I, but {self.stage1_checkpoint} does not exist: run "
                "codebrain_train with --stage 1 (or --stage all) for this dataset, fold and configuration first")

    def build_networks(self) -> None:
        """Frozen Stage-I generator from its final checkpoint; a prior encoder with the configured head, started
        from E_c unless ``prior_init`` is ``'random'``."""
        self.generator, stage1_state = load_stage_one(self.stage1_checkpoint, self.device, self.memory_format)
        trained = self.generator.config
        expected = code_levels(self.options.variant, self.options.code_dim, self.planned.fsq_levels)
        if trained.variant != self.options.variant or trained.fsq_levels != expected:
            raise InputError(f"{self.stage1_checkpoint} holds a {trained.variant!r} Stage I with code levels "
                             f"{list(trained.fsq_levels)}, but this run asks for variant {self.options.variant!r} "
                             f"with levels {list(expected)}: train Stage I with the same --variant / --code-dim")
        self.source_relevance = stage1_state.get("source_relevance")
        stage1_config = self.generator.config.to_dict()
        # The quantiser's default head (FSQ: grading, VQ: cls, continuous: regression) unless 'cls' is asked for.
        stage1_config["head"] = ("cls" if self.options.ablation == "cls"
                                 else HEADS_BY_QUANTIZER[self.generator.config.quantizer][0])
        self.network_config = CodeBrainConfig.from_dict(stage1_config)
        self.fsq_levels = list(self.network_config.target_levels)  # every code channel of every code
        self.class_counts = list(self.network_config.class_counts)
        self.stage1_iteration = int(stage1_state["iteration"])
        self.prior_initialised_from = "random"
        prior = PriorEncoder(self.network_config)
        if self.options.prior_init == "common_encoder" and warm_start(prior, self.generator):
            self.prior_initialised_from = "common_encoder"
        self.networks = {"prior_encoder": prior}

    def configure_optimizers(self) -> None:
        """AdamW with the generator's settings, cosine-annealed per iteration (reference section 6)."""
        self.add_optimizer("prior_encoder", self.planned.optimizer("generator_optimizer"), cosine=True)

    def extra_checkpoint(self, name: str) -> dict[str, Any]:
        """Architecture and Stage-I provenance; best / final also hold the frozen generator for inference."""
        extra: dict[str, Any] = {"network_config": self.network_config.to_dict(),
                                 "stage1_checkpoint": str(self.stage1_checkpoint),
                                 "stage1_iteration": self.stage1_iteration,
                                 "prior_initialised_from": self.prior_initialised_from}
        if self.source_relevance is not None:
            extra["source_relevance"] = self.source_relevance
        if name in ("checkpoint_best.pth", "checkpoint_final.pth"):
            extra["frozen_networks"] = {"generator": self.generator.state_dict()}
        return extra

    def _loss(self, logits: Tensor, levels: Tensor) -> Tensor:
        if self.network_config.head == "cls":
            return classification_loss(logits, levels, self.class_counts)
        if self.network_config.head == "regression":
            # logits_to_levels bounds the output (tanh) exactly as imputation will; it is differentiable here.
            return code_regression_loss(self.networks["prior_encoder"].logits_to_levels(logits), levels)
        return grading_loss(logits, levels, self.fsq_levels)

    def train_step(self, x: Tensor, available: Tensor, iteration: int) -> dict[str, float]:
        """One code-prediction step; also reports the code accuracy (continuous codes: the code MAE) of the batch."""
        masked = x * available.to(x.dtype).view(1, -1, 1, 1)
        with torch.no_grad(), self.autocast():
            levels = self.generator.codes_to_levels(self.generator.encode_codes(x))
        with self.autocast():
            logits = self.train_modules["prior_encoder"](masked)
        loss = self._loss(logits.float(), levels)
        self.optimizer_step("prior_encoder", loss)
        with torch.no_grad():
            predicted = self.networks["prior_encoder"].logits_to_levels(logits.detach().float())
            if self.network_config.head == "regression":
                return {"loss_code": loss.detach().item(), "train_code_mae": (predicted - levels).abs().mean().item()}
            accuracy = (predicted == levels).float().mean()
        return {"loss_code": loss.detach().item(), "train_code_accuracy": accuracy.item()}

    @torch.inference_mode()
    def validate(self) -> dict[str, Any]:
        """Real imputation PSNR / SSIM over the single-missing patterns, plus code accuracy (continuous: code MAE)."""
        prior = self.networks["prior_encoder"]
        sources = torch.Generator().manual_seed(self.options.seed)  # v1: the same random sources every validation
        counts = {"correct": 0.0, "error": 0.0, "total": 0.0}
        level_counts = [torch.zeros(classes, dtype=torch.float64) for classes in self.class_counts]

        def predict(x: Tensor, masks: Tensor) -> Tensor:
            masked = masked_inputs(x, masks)
            with self.autocast():
                target = self.generator.codes_to_levels(self.generator.encode_codes(x))
                logits = prior(masked).float()
                predicted = prior.logits_to_levels(logits)  # the accuracy counts grid levels
                # Decoded as imputation decodes (expected levels), so the best checkpoint is chosen on what users get.
                reconstruction = self.generator.impute_from_codes(
                    self.generator.levels_to_codes(prior.logits_to_levels(logits, "expected")), masked,
                    masks.repeat_interleave(len(x), dim=0), generator=sources)
            target = target.repeat(len(masks), 1, 1, 1)
            counts["correct"] += float((predicted == target).sum())
            counts["error"] += float((predicted.float() - target.float()).abs().sum())
            counts["total"] += target.numel()
            for channel, histogram in enumerate(level_counts):
                histogram += torch.bincount(target[:, channel].flatten(), minlength=len(histogram)).cpu()
            return reconstruction

        metrics = score_patterns(self.validation_batches(), single_missing_patterns(self.num_channels), predict,
                                 self.channel_names, decodes_per_slice=1)
        if not level_counts:  # continuous codes: no classes to count
            metrics["code_mae"] = counts["error"] / max(counts["total"], 1.0)
            return metrics
        metrics["code_accuracy"] = counts["correct"] / max(counts["total"], 1.0)
        # Always answering each channel's most frequent level: the accuracy to beat.
        metrics["majority_accuracy"] = float(torch.stack([h.max() / h.sum() for h in level_counts]).mean())
        return metrics
