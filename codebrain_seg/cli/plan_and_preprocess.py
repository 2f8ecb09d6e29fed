"""``codebrain_plan_and_preprocess -d D``: fingerprint, plans, splits and preprocessed arrays."""
from __future__ import annotations

import argparse
from typing import Sequence

import torch

from codebrain_seg.cli.common import run_cli
from codebrain_seg.errors import EnvironmentSetupError
from codebrain_seg.run.planning import plan_and_preprocess

REFERENCE_GPU_MEMORY_GB = 24.0  # the paper's RTX 4090


def _gpu_memory_gb(device: str, requested: float | None) -> float:
    if device == "cuda" and not torch.cuda.is_available():
        raise EnvironmentSetupError("--device cuda: no CUDA GPU is available here (torch.cuda.is_available() is "
                                    "False); leave --device out (and plan for another machine's GPU with "
                                    "--gpu-memory-gb G)")
    if requested is not None:
        return requested
    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory / 1e9
    return REFERENCE_GPU_MEMORY_GB


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of codebrain_plan_and_preprocess."""
    parser = argparse.ArgumentParser(prog="codebrain_plan_and_preprocess", description=__doc__)
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (137), full or short name")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configurations to preprocess (default: all in the plans, e.g. 2d 2d_cpu)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="with cuda, the batch size of the 2d configuration is fitted to this GPU's memory")
    parser.add_argument("--gpu-memory-gb", type=float, default=None,
                        help=f"GPU memory budget for the 2d configuration (default: the GPU's, else "
                             f"{REFERENCE_GPU_MEMORY_GB:g}, the paper's GPU)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="check every raw case before planning (the default now; kept for nnU-Net habits)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the check of every raw case (readable, same grid, finite, not all zero, known "
                             "labels) that runs by default")
    parser.add_argument("--replan", action="store_true", help="recompute fingerprint and plans")
    parser.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                        help="size 2d_cpu (network, iterations, validation cadence) for this many minutes of "
                             "training in all, both stages and validation included, on this machine (default: "
                             "about half an hour per stage)")
    parser.add_argument("--no-benchmark", action="store_true",
                        help="size 2d_cpu from the analytic FLOP estimate instead of timing a few training steps "
                             "on this machine (offline planning for another machine)")
    args = parser.parse_args(argv)

    def run() -> None:
        out = plan_and_preprocess(args.dataset, args.configurations,
                                  gpu_memory_gb=_gpu_memory_gb(args.device, args.gpu_memory_gb),
                                  num_processes=args.num_processes, verify=not args.no_verify,
                                  replan=args.replan, benchmark=not args.no_benchmark,
                                  time_budget_minutes=args.time_budget)
        print(f"plans and preprocessed data: {out}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
