"""Devices and numeric precision: which device a run uses and whether it computes bf16 natively."""
from __future__ import annotations

import logging
import os

import torch

from codebrain_seg.errors import EnvironmentSetupError, InputError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# oneDNN's instruction-set cap for processes that train 3D convolution networks on an AMX CPU (below).
ONEDNN_3D_SAFE_ISA = "AVX512_CORE_BF16"

logger = logging.getLogger(__name__)


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes in bf16 natively (a recent CUDA GPU; a CPU with AMX or AVX512-BF16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # Without hardware support bf16 is emulated and slower than fp32; these probes are private but stable
        # since torch 2.1, hence the getattr guard.
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def amx_cpu() -> bool:
    """True when this CPU has AMX tiles (Intel Xeon 4th generation and later): oneDNN's fastest bf16 path."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())  # private probe, as above


def avoid_amx_for_3d_training() -> bool:
    """Cap oneDNN below AMX in this process when the CPU has AMX; True when the cap was set now.

    Why: with torch 2.13 on an AMX CPU (Intel Xeon, 2026-12-02), nnU-Net's 3D U-Net of the cardiac dataset
    (patch 7 x 144 x 112) crashed the process in its first fp32 backward pass (``double free or corruption``,
    segfault), and CoPeVAE's bf16 3D backward gave NaN gradients; with oneDNN capped at ``AVX512_CORE_BF16`` the
    same runs trained (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMX`` crashed again). oneDNN reads the cap once, at the
    process's first convolution, so commands that train 3D networks call this first; it is a no-op later in the
    process, off AMX, and where the user has set ``ONEDNN_MAX_CPU_ISA`` already. The fp32 3D trainers lose
    nothing by it (AMX speeds up bf16 and int8); 2D CodeBrain training in bf16, 1.56x faster with AMX, is
    not capped.
    """
    if "ONEDNN_MAX_CPU_ISA" in os.environ or not amx_cpu():
        return False
    os.environ["ONEDNN_MAX_CPU_ISA"] = ONEDNN_3D_SAFE_ISA
    logger.info("oneDNN capped at %s for 3D training on this AMX CPU (ONEDNN_MAX_CPU_ISA; set it yourself to "
                "choose)", ONEDNN_3D_SAFE_ISA)
    return True


def preferred_memory_format(device: torch.device) -> torch.memory_format:
    """Memory order of the 2D networks and their batches on ``device``.

    Channels-last on CUDA and on CPUs with AVX512 (oneDNN's NHWC kernels; about 1.5x faster there), the default
    order elsewhere: on an AVX2-only CPU (an AMD EPYC of the CI machines) channels-last made a Stage I step of the
    CPU network 2.5x slower (4.2 s against 1.7 s at 152x184, batch 4, one thread; its PatchGAN's 3x3 convolutions
    2.4x slower), so there the reference's default order is kept.
    """
    if device.type == "cuda":
        return torch.channels_last
    if device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return torch.channels_last
    return torch.contiguous_format


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The memory order a 4D tensor is laid out in (channels-last or the default), to keep it through a reshape."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """CUDA when requested or available ('auto'), else CPU; ``cuda`` without a GPU is a clear error."""
    if requested not in DEVICES:
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda', got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise EnvironmentSetupError("--device cuda was requested but PyTorch sees no CUDA GPU "
                                    "(torch.cuda.is_available() is False); use --device cpu")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def uses_gpu(device: str) -> bool:
    """Whether a run asked for ``device`` (auto|cpu|cuda...) will use a CUDA GPU."""
    return str(device) != "cpu" and torch.cuda.is_available()
