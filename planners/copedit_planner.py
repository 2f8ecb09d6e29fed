"""The CoPeDiT configurations of the plans: 3D volumes chosen from the fingerprint, with the reason for every value.

CoPeDiT (Liu et al., arXiv 2602.18400) imputes whole 3D volumes, so its configurations describe a volume rather
than slices: the brain's bounding box, padded to a multiple of the tokenizer's compression per axis, resized
(trilinear, aspect ratio not kept, as the official code does) to a fixed target size.

* ``3d_copedit`` — the paper: 192 x 192 x 64 volumes, CoPeVAE-B + MDiT3D-B, 400k / 100k iterations;
* ``3d_copedit_cpu`` — 64 x 64 x 32 volumes and the small networks of ``CoPeDiTConfig.cpu`` for two CPU cores.

Both are written into ``codebrainPlans.json`` beside the 2D configurations (``kind: '3d_volume'``) and are
preprocessed only when named (``codebrain_plan_and_preprocess -c 3d_copedit_cpu``): their arrays are another
resampling of the same cases, which the 2D methods never read.
"""
from __future__ import annotations

import math
from typing import Any

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit.config import CoPeDiTConfig

VOLUME_KIND = "3d_volume"
PAPER_CONFIGURATION = "3d_copedit"
CPU_CONFIGURATION = "3d_copedit_cpu"
COPEDIT_CONFIGURATIONS = (PAPER_CONFIGURATION, CPU_CONFIGURATION)
PAPER_TARGET = (192, 192, 64)
CPU_TARGET = (64, 64, 32)
# Activation memory of one CoPeVAE-B training case (4 volumes of 192x192x64) in fp16, from the reference's
# compute notes (about 20 GB); taken as 30 GB with the weights, optimiser state and discriminator.
PAPER_GB_PER_CASE = 30.0
PAPER_FIXED_GB = 4.0
PAPER_STAGE1 = {"iterations": 400_000, "global_batch": 8}
PAPER_STAGE2 = {"iterations": 100_000, "batch_size": 32}
# CPU budget: about 10 minutes per stage on two cores (benchmarks/bench_copedit.py measures the step times).
CPU_STAGE1 = {"iterations": 600, "batch_size": 2}
CPU_STAGE2 = {"iterations": 1500, "batch_size": 8}
WARMUP_FRACTION_CPU = 0.05
CPU_PRETEXT_WEIGHT = 0.1
CPU_EXTRA_PATTERNS = 16
PAPER_WARMUP = 1000
AUGMENTATION = {"flip_probability": 0.3, "rotate90_probability": 0.3, "scale_probability": 0.2,
                "scale_range": [0.9, 1.1], "shift_probability": 0.2, "shift_range": [-0.05, 0.05]}


def is_volume_configuration(configuration: dict[str, Any]) -> bool:
    """True for a 3D-volume (CoPeDiT) configuration of the plans."""
    return configuration.get("kind") == VOLUME_KIND


def decide_box_size(fingerprint: dict[str, Any], multiple: int) -> tuple[list[int], str]:
    """Box around the brain per RAS axis: the largest brain extent over the cases, up to a multiple of ``multiple``."""
    extents = [int(size) for size in fingerprint["max_brain_extent"]]
    box = [int(math.ceil(size / multiple) * multiple) for size in extents]
    return box, (f"largest brain extent over all {fingerprint.get('num_cases', len(fingerprint['cases']))} cases is "
                 f"{extents} voxels (RAS order); padded up to a multiple of {multiple} (the CoPeVAE compression) so "
                 "that no case's brain is cut; the box is centred on each case's brain")


def decide_stage1_batch(gpu_memory_gb: float) -> tuple[int, bool, str]:
    """Per-rank CoPeVAE-B batch (cases) and whether gradient checkpointing is needed, from the GPU memory."""
    fitting = int((gpu_memory_gb - PAPER_FIXED_GB) // PAPER_GB_PER_CASE)
    checkpointing = fitting < 1
    batch = max(1, fitting)
    return batch, checkpointing, (
        f"about {PAPER_GB_PER_CASE:g} GB per training case (4 volumes, fp16 activations, reference compute notes) "
        f"plus {PAPER_FIXED_GB:g} GB fixed: {batch} case(s) per rank on {gpu_memory_gb:g} GB"
        + ("; gradient checkpointing of the VQVAE (less than one case fits without it)" if checkpointing else "")
        + f"; the paper's global batch {PAPER_STAGE1['global_batch']} needs "
          f"{math.ceil(PAPER_STAGE1['global_batch'] / batch)} ranks")


def warmup_cosine(lr: float, warmup: int, eta_min: float, betas: tuple[float, float], weight_decay: float,
                  name: str) -> dict[str, Any]:
    """An optimiser entry of the plans: Adam / AdamW with a linear warmup, then cosine per iteration to eta_min."""
    return {"name": name, "lr": lr, "betas": list(betas), "weight_decay": weight_decay, "warmup_iterations": warmup,
            "schedule": "linear warmup, then cosine per iteration to eta_min", "eta_min": eta_min}


_warmup_cosine = warmup_cosine


def _paper_configuration(channels: int, box: list[int], box_reason: str, gpu_memory_gb: float) -> dict[str, Any]:
    batch, checkpointing, batch_reason = decide_stage1_batch(gpu_memory_gb)
    network = CoPeDiTConfig.paper(channels).to_dict()
    network["vae"]["use_checkpointing"] = checkpointing
    return {
        "kind": VOLUME_KIND,
        "method": "copedit",
        "data_identifier": f"codebrainPlans_{PAPER_CONFIGURATION}",
        "default_preprocessing": False,
        "box_size": box,
        "target_size": list(PAPER_TARGET),
        "network": network,
        "optimisation": {
            "stage1": {"iterations": PAPER_STAGE1["iterations"], "batch_size": batch},
            "stage2": dict(PAPER_STAGE2),
            "vae_optimizer": _warmup_cosine(1e-4, PAPER_WARMUP, 1e-6, (0.9, 0.999), 0.0, "Adam"),
            "discriminator_optimizer": _warmup_cosine(1e-4, PAPER_WARMUP, 1e-6, (0.9, 0.999), 0.0, "Adam"),
            "dit_optimizer": _warmup_cosine(5e-5, PAPER_WARMUP, 1e-6, (0.9, 0.999), 0.0, "AdamW"),
            "gradient_clip": 1.0,
            "loss": {"lambda_missing": 1.0, "lambda_available": 1.0},
            "augmentation": dict(AUGMENTATION),
        },
        "reasons": {
            "box_size": box_reason,
            "target_size": "the official code's 192x192x64 (trilinear resize, aspect ratio not kept)",
            "network": "CoPeVAE-B (137.63 M parameters for 4 sequences) and MDiT3D-B (173.34 M), the paper's sizes",
            "batch_size": batch_reason,
            "iterations": "the paper's 400k CoPeVAE and 100k MDiT3D iterations, batch 32 for MDiT3D on cached latents",
            "optimisers": "the official code's Adam 1e-4 (CoPeVAE) and AdamW 5e-5 (MDiT3D), stepped per iteration "
                          "with a 1k-iteration warmup (the official code steps its schedule once per epoch)",
            "loss": "CoPeVAE reconstructs every sequence with the same L1 weight: lambda_missing = "
                    "lambda_available = 1 (the CodeBrain keys, kept so that every configuration has them)",
            "ema_decay": "the paper's 0.9999",
        },
    }


def _cpu_configuration(channels: int, box: list[int], box_reason: str) -> dict[str, Any]:
    network = CoPeDiTConfig.cpu(channels)
    network = network.to_dict()
    # 1.5k iterations are too few for the paper's 0.9999: an EMA over ~100 iterations follows the training
    network["diffusion"]["ema_decay"] = 0.99
    # a few hundred iterations at the paper's 0.01 leave the shared encoder's latents nearly alike for every
    # sequence, and the count / position heads at chance: the pretext tasks get ten times the weight
    network["vae"]["pretext_weight"] = CPU_PRETEXT_WEIGHT
    network["vae"]["prompt_pooling"] = "sum"
    stage1, stage2 = dict(CPU_STAGE1), dict(CPU_STAGE2)
    return {
        "kind": VOLUME_KIND,
        "method": "copedit",
        "data_identifier": f"codebrainPlans_{CPU_CONFIGURATION}",
        "default_preprocessing": False,
        "box_size": box,
        "target_size": list(CPU_TARGET),
        "network": network,
        "optimisation": {
            "stage1": stage1,
            "stage2": stage2,
            "vae_optimizer": _warmup_cosine(1e-3, int(WARMUP_FRACTION_CPU * stage1["iterations"]), 1e-4,
                                            (0.9, 0.999), 0.0, "Adam"),
            "discriminator_optimizer": _warmup_cosine(1e-3, int(WARMUP_FRACTION_CPU * stage1["iterations"]), 1e-4,
                                                      (0.5, 0.9), 0.0, "Adam"),
            "dit_optimizer": _warmup_cosine(1e-3, int(WARMUP_FRACTION_CPU * stage2["iterations"]), 1e-5,
                                            (0.9, 0.999), 0.0, "AdamW"),
            "gradient_clip": 1.0,
            "codebook_restart": {"every": 10, "threshold": 0.01, "until": 0.8},
            "pretext_patterns_per_case": CPU_EXTRA_PATTERNS,
            "loss": {"lambda_missing": 1.0, "lambda_available": 1.0},
            "augmentation": dict(AUGMENTATION),
        },
        "reasons": {
            "codebook_restart": "codebook entries whose EMA count fell below 0.01 are re-seeded with latents of the "
                                "batch every 10 iterations during the first 80 % (not in the paper: this small VQVAE "
                                "collapses onto one entry from MONAI's N(0, 1) initial codebook)",
            "pretext_patterns_per_case": f"the count and position losses also see {CPU_EXTRA_PATTERNS} more random "
                                         "missing patterns of each case's latents per step (the prompt encoders "
                                         "cost little next to the VQVAE): more pretext samples in a short run",
            "box_size": box_reason,
            "target_size": "64x64x32: a third of the paper's in-plane size and half its slices, so that both stages "
                           "train in minutes on two CPU cores (latents 8x8x4, 32 tokens per sequence)",
            "network": "CoPeDiTConfig.cpu: VQVAE widths 8/16/32 with one residual unit, codebook 512, prompts 128 "
                       "wide, MDiT3D width 96 / depth 4 / 3 heads, 20 DDIM steps",
            "batch_size": "2 cases for CoPeVAE (the contrastive task needs other cases as negatives), 8 cached "
                          "latent stacks for MDiT3D",
            "iterations": "about 10 minutes per stage on two CPU cores (benchmarks/bench_copedit.py)",
            "optimisers": "10x the paper's learning rates with a 5 % warmup: a few hundred iterations instead of "
                          "hundreds of thousands; cosine to a tenth (CoPeVAE) / a hundredth (MDiT3D)",
            "loss": "CoPeVAE reconstructs every sequence with the same L1 weight: lambda_missing = "
                    "lambda_available = 1",
            "ema_decay": "0.99 instead of the paper's 0.9999: the EMA must follow a run of ~1k iterations",
            "pretext_weight": f"{CPU_PRETEXT_WEIGHT:g} instead of the paper's 0.01: in a few hundred iterations the "
                              "pretext tasks must shape the shared encoder's latents enough for the count and "
                              "position heads to leave chance",
            "prompt_pooling": "sum of the given sequences' prompt tokens instead of the official code's mean: "
                              "the mean holds the number of sequences only in its second moments (the count head "
                              "stayed at chance after 1,200 steps of batch 32 on frozen latents), the sum holds it "
                              "linearly",
        },
    }


def plan_copedit_configurations(fingerprint: dict[str, Any], gpu_memory_gb: float = 24.0) -> dict[str, Any]:
    """``{'3d_copedit': ..., '3d_copedit_cpu': ...}`` for a fingerprint (module docstring)."""
    channels = len(fingerprint["channel_names"])
    if channels < 2:
        raise InputError(f"CoPeDiT needs at least 2 sequences per case, got {channels}")
    compression = CoPeDiTConfig.paper(channels).vae.compression
    box, box_reason = decide_box_size(fingerprint, compression)
    return {PAPER_CONFIGURATION: _paper_configuration(channels, box, box_reason, gpu_memory_gb),
            CPU_CONFIGURATION: _cpu_configuration(channels, box, box_reason)}


def add_copedit_configurations(plans: dict[str, Any], fingerprint: dict[str, Any],
                               gpu_memory_gb: float = 24.0) -> bool:
    """Add the CoPeDiT configurations that ``plans`` lacks (plans made before they existed); True if any was added.

    Existing configurations, CoPeDiT's included, are never changed, so their preprocessed arrays stay valid.
    """
    if fingerprint.get("task") == "missing_slices":
        return False  # the cardiac plans hold their own CoPeDiT configurations (planners.cardiac_planner)
    added = False
    for name, configuration in plan_copedit_configurations(fingerprint, gpu_memory_gb).items():
        if name not in plans["configurations"]:
            plans["configurations"][name] = configuration
            added = True
    return added
