"""Direct-regression baseline: CodeBrain's common encoder and decoder trained pixel-to-pixel, without codes.

The same loop as CodeBrain Stage I (one random missing pattern per batch, the zero-filled stack in, every
modality out, ``lambda_a * PSNR-loss(available) + lambda_m * PSNR-loss(missing)`` with the plans' weights (or the
run's ``loss_weights``) and optimiser), minus the posterior encoder, the quantised codes and the GAN. One stage;
validation is real imputation over the single-missing patterns. The network is
:class:`codebrain_seg.networks.RegressionNetwork`, loaded for imputation by the ``regression`` registry entry.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from codebrain_seg.losses import psnr_loss_per_channel, reconstruction_loss
from codebrain_seg.networks import RegressionNetwork
from trainers.base_trainer import BaseTrainer
from trainers.data_loading import single_missing_patterns
from trainers.stage1 import masked_inputs, network_config, score_patterns


class RegressionTrainer(BaseTrainer):
    """The regression baseline's only stage (``method = 'regression'``, ``stage = 1``)."""

    method = "regression"
    stage = 1

    def build_networks(self) -> None:
        """One :class:`RegressionNetwork` with the configuration's E_c and decoder sizes."""
        self.network_config = network_config(self.plans, self.configuration)
        self.networks = {"generator": RegressionNetwork(self.network_config)}
        self.lambda_missing, self.lambda_available = self.reconstruction_weights()

    def configure_optimizers(self) -> None:
        """The CodeBrain generator's AdamW and cosine schedule."""
        self.add_optimizer("generator", self.planned.optimizer("generator_optimizer"), cosine=True)

    def extra_checkpoint(self, name: str) -> dict[str, Any]:
        """The architecture, so inference rebuilds the network from the checkpoint alone."""
        return {"network_config": self.network_config.to_dict()}

    def train_step(self, x: Tensor, available: Tensor, iteration: int) -> dict[str, float]:
        """One pixel-to-pixel step on a batch with one missing pattern."""
        masked = x * available.to(x.dtype).view(1, -1, 1, 1)
        with self.autocast():
            reconstruction = self.train_modules["generator"](masked)
        reconstruction = reconstruction.float()
        loss = reconstruction_loss(reconstruction, x, available, "psnr", self.lambda_available, self.lambda_missing)
        self.optimizer_step("generator", loss)
        psnr = -psnr_loss_per_channel(reconstruction.detach(), x)
        return {"loss_rec": loss.detach().item(), "train_psnr_missing": float(psnr[~available].mean())}

    def validate(self) -> dict[str, Any]:
        """Mean PSNR / SSIM of real imputation over the single-missing patterns."""
        model = self.networks["generator"]

        def predict(x: Tensor, masks: Tensor) -> Tensor:
            with torch.inference_mode(), self.autocast():
                return model(masked_inputs(x, masks))

        return score_patterns(self.validation_batches(), single_missing_patterns(self.num_channels), predict,
                              self.channel_names)
