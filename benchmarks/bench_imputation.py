"""Imputation speed and memory on a real BraTS volume (240x240x155, T1Gd missing), as a user waits for it.

Usage:
    python benchmarks/bench_imputation.py --dataset D [--fold F] [-c 2d_cpu] [--repeats N] [--paper]

With a trained model of ``--dataset`` (``$codebrain_results``; e.g. the one ``benchmarks/bench_planning.py --real``
trains), it prints:

* the **whole command**: wall seconds of ``codebrain_impute`` on one held-out case (a fresh process: Python start,
  imports, model loading, reading, imputing, writing), without and with ``--save-confidence``, the peak resident
  memory of those processes, and the seconds with ``--mirror`` (test-time mirroring);
* the **precision agreement**: PSNR of the bf16-autocast output against the fp32 output of the same model on the
  same case (over the brain, data range = the fp32 output's brain range), and the in-process seconds of each. The
  predictor picks bf16 by itself only where the CPU computes it natively (AMX / AVX512-BF16); elsewhere bf16 is
  emulated (slower) and fp32 is what runs;
* with ``--paper``: the in-process seconds per volume of the paper configuration (``2d``), an untrained network of
  its sizes (the cost of inference does not depend on the weights).

One figure per line, with the load average, so a figure measured beside other jobs can be read as such.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from codebrain_seg import paths  # noqa: E402
from codebrain_seg.inference.codebrain import CodeBrainPredictor  # noqa: E402
from codebrain_seg.io import read_json, read_nifti  # noqa: E402
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder, StageOneModel  # noqa: E402
from codebrain_seg.raw_dataset import image_path  # noqa: E402

MISSING = "T1Gd"


def _child_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _command_seconds(args: argparse.Namespace, source: Path, output: Path, *flags: str) -> float:
    command = [sys.executable, "-m", "codebrain_seg.cli.impute", "-d", str(args.dataset), "-f", str(args.fold),
               "-c", args.configuration, "-i", str(source), "-o", str(output), *flags]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def _agreement_psnr(reference: np.ndarray, other: np.ndarray, brain: np.ndarray) -> float:
    values, against = reference[brain].astype(np.float64), other[brain].astype(np.float64)
    data_range = float(values.max() - values.min()) or 1.0
    mse = float(np.mean((values - against) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(data_range ** 2 / mse))


def _timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> None:
    """Time the imputation command and the in-process paths on one held-out case; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="dataset of a trained model")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("-c", "--configuration", default="2d_cpu")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each command (the best is reported)")
    parser.add_argument("--paper", action="store_true", help="also time the paper configuration (minutes on a CPU)")
    args = parser.parse_args(argv)
    raw = paths.raw_dataset_dir(args.dataset)
    split = read_json(paths.preprocessed_dataset_dir(args.dataset) / "splits_final.json")[args.fold]
    case = split["val"][0]
    predictor = CodeBrainPredictor.from_results(args.dataset, args.fold, args.configuration, "cpu")
    missing = predictor.channel_names.index(MISSING)
    print(f"load_average_1min_at_start: {os.getloadavg()[0]:.2f}")
    print(f"cpu: {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; predictor precision by default: {predictor.precision}")
    print(f"case: {case} (held out of fold {args.fold}), missing {MISSING}; model {predictor.model_info}")

    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "input"
        source.mkdir()
        for channel in range(predictor.num_channels):
            if channel != missing:
                (source / image_path(raw, case, channel).name).symlink_to(image_path(raw, case, channel))
        plain = [_command_seconds(args, source, Path(work) / f"out{i}") for i in range(args.repeats)]
        confident = [_command_seconds(args, source, Path(work) / f"conf{i}", "--save-confidence")
                     for i in range(args.repeats)]
        peak_mb = _child_peak_rss_mb()
        mirrored = [_command_seconds(args, source, Path(work) / f"mirror{i}", "--mirror") for i in range(args.repeats)]
    print(f"command_seconds_per_volume: {min(plain):.1f} (best of {len(plain)}: "
          f"{', '.join(f'{s:.1f}' for s in plain)}; codebrain_impute in a new process, start to files written)")
    print(f"command_seconds_per_volume_with_confidence: {min(confident):.1f} "
          f"({', '.join(f'{s:.1f}' for s in confident)})")
    print(f"command_peak_rss_mb: {peak_mb:.0f}")
    print(f"command_seconds_per_volume_with_mirror: {min(mirrored):.1f} ({', '.join(f'{s:.1f}' for s in mirrored)}; "
          "--mirror, four passes per slice)")

    volumes = [read_nifti(image_path(raw, case, c)) for c in range(predictor.num_channels)]
    images = np.stack([v.data for v in volumes]).astype(np.float32)
    available = [c != missing for c in range(predictor.num_channels)]
    brain = np.any(images[np.asarray(available)] != 0, axis=0)
    outputs, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        predictor.precision = precision
        seconds[precision], outputs[precision] = _timed(
            lambda: predictor.impute_arrays(images, available, volumes[0].affine))
        print(f"in_process_seconds_{precision}: {seconds[precision]:.1f}")
    agreement = _agreement_psnr(outputs["fp32"][missing], outputs["bf16"][missing], brain)
    print(f"bf16_vs_fp32_psnr_db: {agreement:.1f} (bf16 autocast output against fp32, over the brain)")

    if args.paper:
        plans = predictor.plans
        settings = plans["configurations"]["2d"]
        config = CodeBrainConfig(in_channels=predictor.num_channels, fsq_levels=settings["fsq_levels"],
                                 **settings["network"])
        torch.manual_seed(0)
        paper = CodeBrainPredictor(StageOneModel(config), PriorEncoder(config), plans, "2d", "cpu",
                                   model_info={"untrained": True})
        paper_seconds, _ = _timed(lambda: paper.impute_arrays(images, available, volumes[0].affine))
        print(f"paper_configuration_seconds_per_volume: {paper_seconds:.0f} (in process, {paper.precision}, batch "
              f"{paper.batch_size}, untrained network of the 2d sizes)")
    print(f"load_average_1min_at_end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
