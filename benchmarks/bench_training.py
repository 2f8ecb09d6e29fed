"""Training and inference speed of the CodeBrain trainer on this machine, one figure per line.

Measures the real Stage-I ``train_step`` (discriminator step + generator step with the adversarial term,
optimiser updates included) on random 4-modality slices, for the paper configuration at 240 x 240 (batch 1
and 2) and for the CPU configuration the planner picks for a 240 x 240 crop, plus Stage-II inference
(prior encoder + common encoder + decoder) seconds per slice. Each case runs in its own process so that
its peak resident memory is its own. Every case is measured in fp32 and with bf16 autocast, which the trainer
picks by itself (``--precision auto``) on CPUs with native bf16 (AMX / AVX512-BF16) and which runs the paper
configuration about twice as fast there; ``--compile`` adds the paper configuration under ``torch.compile`` (batch 1
and 2; the first step's time, compilation included, is printed). The figure ``paper_batchB_default_over_fp32`` is
what a user gets by default (``--precision auto --compile auto`` for the paper's 300k iterations: bf16 on a CPU with
native bf16, compiled only on AMX CPUs and GPUs: ``trainers.options.choose_compile``) over fp32, both measured in
this run.

On a shared machine other processes steal cycles and two OpenMP threads suffer badly from it: the best
iteration is reported (closest to the machine's capacity), the median (what a run sees under the current
load) and the process CPU seconds per iteration (with ``--threads 1``, a load-independent measure of work).

Usage: python benchmarks/bench_training.py [--iterations N] [--device cpu|cuda] [--threads T] [--compile]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from codebrain_seg.device import native_bf16
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder
from planners.budget import PAPER_SIZE
from planners.experiment_planner import (
    CPU_BATCH_SIZE,
    PAPER_FSQ_LEVELS,
    PAPER_ITERATIONS,
    _optimisation,
    decide_cpu_network,
)
from trainers.base_trainer import TrainingOptions
from trainers.options import choose_compile
from trainers.stage1 import CodeBrainStageOneTrainer
from trainers.stage2 import impute

CHANNELS = ["T1", "T1Gd", "T2", "FLAIR"]
CROP = [240, 240]


def _plans(network: dict[str, int], batch_size: int) -> dict:
    configuration = {"crop_size": CROP, "fsq_levels": PAPER_FSQ_LEVELS, "network": network,
                     "batch_size": batch_size, "optimisation": _optimisation(1000, batch_size)}
    return {"channel_names": CHANNELS, "configurations": {"bench": configuration}}


def _network(kind: str) -> dict[str, int]:
    return PAPER_SIZE.as_dict() if kind == "paper" else decide_cpu_network(CROP, len(CHANNELS))[0].as_dict()


def _timed(function, repeats: int) -> tuple[list[float], list[float]]:
    """Sorted wall-clock and process-CPU seconds of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return sorted(wall), sorted(cpu)


def measure(kind: str, batch_size: int, iterations: int, device: str, precision: str,
            compiled: bool = False) -> dict[str, float]:
    """Slices per second of Stage-I training and seconds per slice of Stage-II inference, in this process."""
    plans = _plans(_network(kind), batch_size)
    with tempfile.TemporaryDirectory() as work:
        options = TrainingOptions(iterations=1000, batch_size=batch_size, device=device, precision=precision,
                                  compile=bool(compiled))
        trainer = CodeBrainStageOneTrainer(plans, "bench", Path(work), {"train": [], "val": []}, Path(work),
                                           options)
        trainer._setup()
        x = torch.rand(batch_size, len(CHANNELS), *CROP, device=trainer.device)
        x = x.contiguous(memory_format=trainer.memory_format)
        available = torch.tensor([True, False, True, True], device=trainer.device)
        last = trainer.total_iterations - 1  # past the adversarial start: the full generator objective
        start = time.perf_counter()
        trainer.train_step(x, available, last)  # the first step compiles (under torch.compile)
        first_step = time.perf_counter() - start
        trainer.train_step(x, available, last)
        train, train_cpu = _timed(lambda: trainer.train_step(x, available, last), iterations)

        generator = trainer.networks["generator"].eval()
        prior = PriorEncoder(CodeBrainConfig.from_dict(generator.config.to_dict()))
        prior = prior.to(trainer.device, memory_format=trainer.memory_format).eval()
        masked = x * available.view(1, -1, 1, 1)
        with torch.inference_mode(), trainer.autocast():
            impute(generator, prior, masked)
            infer, _ = _timed(lambda: impute(generator, prior, masked), iterations)
    # On a shared machine other processes steal cycles: the best iteration is the closest to this machine's
    # capacity, the median what a run sees under the current load.
    median = train[len(train) // 2]
    return {"train_slices_per_s": batch_size / train[0], "train_slices_per_s_median": batch_size / median,
            "train_seconds_per_iteration": train[0], "train_cpu_seconds_per_iteration": train_cpu[0],
            "inference_seconds_per_slice": infer[0] / batch_size,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads(), "first_step_seconds": first_step,
            "generator_parameters_m": sum(p.numel() for p in generator.parameters()) / 1e6}


def _default_path(device: str) -> tuple[str, bool]:
    """(precision, compiled) that ``codebrain_train`` chooses for the paper configuration's run on ``device``."""
    resolved = torch.device("cuda" if device == "cuda" else "cpu")
    return ("bf16" if native_bf16(resolved) else "fp32"), choose_compile(None, PAPER_ITERATIONS, resolved)


def main() -> None:
    """Run every case in a child process and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per case (OMP_NUM_THREADS); default: one per core")
    parser.add_argument("--compile", action="store_true",
                        help="also measure the paper configuration (batch 1, bf16) under torch.compile "
                             "(about 5 minutes of compilation on a 2-core CPU)")
    parser.add_argument("--one", nargs=4, metavar=("KIND", "BATCH", "PRECISION", "COMPILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, batch, precision, compiled = args.one
        print(json.dumps(measure(kind, int(batch), args.iterations, args.device, precision, compiled == "1")))
        return
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    print(f"load_average_1min: {os.getloadavg()[0]:.2f}")
    print(f"cpu_count: {os.cpu_count()}")

    default = _default_path(args.device)
    # Without native bf16 (e.g. an AVX2-only CPU) bf16 is emulated, slower than fp32 and never chosen: not timed.
    precisions = ("fp32", "bf16") if default[0] == "bf16" else ("fp32",)
    cases = [("paper", b, p) for p in precisions for b in (1, 2)] + [("cpu", CPU_BATCH_SIZE, p) for p in precisions]
    compiled_cases = [("paper", b, default[0], True) for b in (1, 2)] if args.compile else []
    cases = [(*case, False) for case in cases] + compiled_cases
    print(f"cpu_capability: {torch.backends.cpu.get_cpu_capability()}, native bf16: {default[0] == 'bf16'}")
    print(f"default_path_paper_configuration: {default[0]}{' + torch.compile' if default[1] else ''} "
          f"(what codebrain_train picks for the paper's {PAPER_ITERATIONS} iterations per stage on this machine)")
    measured: dict[tuple[int, str, bool], float] = {}
    for kind, batch, precision, compiled in cases:
        result = subprocess.run([sys.executable, __file__, "--one", kind, str(batch), precision,
                                 "1" if compiled else "0", "--iterations",
                                 str(args.iterations), "--device", args.device],
                                capture_output=True, text=True, check=True, env=env)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        label = f"{kind}_{CROP[0]}x{CROP[1]}_batch{batch}_{precision}{'_compiled' if compiled else ''}"
        if kind == "cpu":
            print(f"{label}_network: {_network('cpu')}")
        print(f"{label}_train_slices_per_s: {figures['train_slices_per_s']:.3f}")
        print(f"{label}_train_slices_per_s_median: {figures['train_slices_per_s_median']:.3f}")
        print(f"{label}_train_seconds_per_iteration: {figures['train_seconds_per_iteration']:.2f}")
        print(f"{label}_train_cpu_seconds_per_iteration: {figures['train_cpu_seconds_per_iteration']:.2f}")
        print(f"{label}_inference_seconds_per_slice: {figures['inference_seconds_per_slice']:.3f}")
        print(f"{label}_peak_rss_mb: {figures['peak_rss_mb']:.0f}")
        print(f"{label}_threads: {figures['threads']}")
        if compiled:
            print(f"{label}_first_step_seconds (compilation included): {figures['first_step_seconds']:.0f}")
        if kind == "paper":
            measured[(batch, precision, compiled)] = figures["train_slices_per_s"]
    for batch in (1, 2):
        fp32, chosen = measured.get((batch, "fp32", False)), measured.get((batch, *default))
        if fp32 and chosen:
            print(f"paper_batch{batch}_default_over_fp32: {chosen / fp32:.2f} (default {chosen:.3f} / fp32 "
                  f"{fp32:.3f} slices/s, best iterations of one run)")


if __name__ == "__main__":
    main()
