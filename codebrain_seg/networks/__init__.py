"""CodeBrain networks: FSQ (and the VQ / continuous ablations), NAFNet encoder/decoder, Stage I/II nets, PatchGAN, the regression baseline."""
from __future__ import annotations

from codebrain_seg.networks.codebrain import (
    CodeBrainConfig,
    PriorEncoder,
    StageOneModel,
    count_parameters,
)
from codebrain_seg.networks.discriminator import PatchDiscriminator
from codebrain_seg.networks.fsq import FSQ, PAPER_LEVELS, round_ste
from codebrain_seg.networks.nafnet import (
    Decoder,
    Encoder,
    LayerNorm2d,
    NAFBlock,
    SimpleGate,
)
from codebrain_seg.networks.quantizers import ContinuousCode, VectorQuantizer
from codebrain_seg.networks.regression import RegressionNetwork

__all__ = [
    "FSQ",
    "PAPER_LEVELS",
    "CodeBrainConfig",
    "ContinuousCode",
    "Decoder",
    "Encoder",
    "LayerNorm2d",
    "NAFBlock",
    "PatchDiscriminator",
    "PriorEncoder",
    "RegressionNetwork",
    "SimpleGate",
    "StageOneModel",
    "VectorQuantizer",
    "count_parameters",
    "round_ste",
]
