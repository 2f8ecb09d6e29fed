"""CodeBrain networks: FSQ, NAFNet encoder/decoder, Stage-I generator, Stage-II prior encoder, PatchGAN."""
from __future__ import annotations

from codebrain_seg.networks.codebrain import CodeBrainConfig, PriorEncoder, StageOneModel, count_parameters
from codebrain_seg.networks.discriminator import PatchDiscriminator
from codebrain_seg.networks.fsq import FSQ, PAPER_LEVELS, round_ste
from codebrain_seg.networks.nafnet import Decoder, Encoder, LayerNorm2d, NAFBlock, SimpleGate

__all__ = [
    "FSQ",
    "PAPER_LEVELS",
    "CodeBrainConfig",
    "Decoder",
    "Encoder",
    "LayerNorm2d",
    "NAFBlock",
    "PatchDiscriminator",
    "PriorEncoder",
    "SimpleGate",
    "StageOneModel",
    "count_parameters",
    "round_ste",
]
