"""Short nnU-Net v2 trainers for CPU demos and tests: nnU-Net's own training, only far fewer iterations.

They are chosen explicitly (``codebrain_evaluate_segmentation --seg-trainer nnUNetTrainerShort``), never by
default: a segmenter trained for a few minutes shows the *ordering* full > imputed > zero-fill, not the Dice of a
real nnU-Net (1000 epochs x 250 iterations). Everything else is nnU-Net's ``nnUNetTrainer``: loss, augmentation,
optimiser, poly learning-rate schedule, region-based training.

Three changes besides the length:

* test-time mirroring is switched off (``inference_allowed_mirroring_axes = None``; mirroring stays in the
  training augmentation): on a CPU it would make every prediction 8 times slower;
* a checkpoint is written after every epoch, so an interrupted run resumes where it stopped;
* on a CPU that computes bf16 natively (AMX or AVX512-BF16; ``codebrain_seg.device.native_bf16``, the project's
  training precision ``auto``) the network runs under bf16 autocast, as nnU-Net itself autocasts on a GPU; the
  losses are computed in fp32. Measured 2.5x faster per iteration at 48 x 64 x 48 patches. nnU-Net keeps fp32 on
  other CPUs (where bf16 is emulated and slower).

nnU-Net finds these classes by name (``-tr``, or when a checkpoint is loaded) through ``nnUNet_extTrainer``
pointing to this file's folder, which :mod:`evaluation.segmentation.nnunet_bridge` sets for its calls; the bridge
itself takes them from ``TRAINERS`` without a search.
"""
from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from codebrain_seg.device import native_bf16


class nnUNetTrainerShort(nnUNetTrainer):  # noqa: N801 (nnU-Net's trainer naming)
    """nnU-Net trainer of 6 epochs x 20 iterations (120 batches): minutes on a 2-core CPU with small patches."""

    EPOCHS = 6
    ITERATIONS_PER_EPOCH = 20
    VALIDATION_ITERATIONS_PER_EPOCH = 2

    def __init__(self, plans: dict, configuration: str, fold: int | str, dataset_json: dict,
                 device: torch.device = torch.device("cpu")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.EPOCHS
        self.num_iterations_per_epoch = self.ITERATIONS_PER_EPOCH
        self.num_val_iterations_per_epoch = self.VALIDATION_ITERATIONS_PER_EPOCH
        self.save_every = 1
        self.bf16_autocast = self.device.type == "cpu" and _native_bf16(self.device)

    def initialize(self) -> None:
        """nnU-Net's initialisation, then (on a native-bf16 CPU) the network's forward under bf16 autocast."""
        initialized = self.was_initialized
        super().initialize()
        if self.bf16_autocast and not initialized:
            _autocast_forward(self.network)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):  # noqa: N802 (nnU-Net's name)
        """nnU-Net's augmentation settings, with test-time mirroring disabled (8x cheaper prediction)."""
        settings = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return settings


def _native_bf16(device: torch.device) -> bool:
    return native_bf16(device)


def _autocast_forward(network: torch.nn.Module) -> None:
    """Run ``network``'s forward under CPU bf16 autocast and return fp32 outputs (one tensor or a deep-supervision
    list), so nnU-Net's unchanged train and validation steps compute their losses and metrics in fp32. The forward
    is replaced on the instance only: the state dict, checkpoints and the class are untouched."""
    forward = network.forward

    def forward_bf16(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = forward(*args, **kwargs)
        if isinstance(output, (list, tuple)):
            return type(output)(o.float() for o in output)
        return output.float()

    network.forward = forward_bf16


class nnUNetTrainerSmoke(nnUNetTrainerShort):  # noqa: N801
    """nnU-Net trainer of 1 epoch x 2 iterations: checks the plumbing, learns nothing useful."""

    EPOCHS = 1
    ITERATIONS_PER_EPOCH = 2
    VALIDATION_ITERATIONS_PER_EPOCH = 1


# The trainers this project defines, by the name nnU-Net stores in checkpoints.
TRAINERS: dict[str, type[nnUNetTrainer]] = {cls.__name__: cls for cls in (nnUNetTrainerShort, nnUNetTrainerSmoke)}
