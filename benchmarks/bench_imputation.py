"""Imputation speed and memory: seconds per BraTS volume (240x240x155, one sequence missing) and peak memory.

Usage:
    python benchmarks/bench_imputation.py [--dataset D --fold F] [-c 2d_cpu] [--device cpu] [--batch-size B]
                                          [--repeats N] [--real-data DIR]

With ``--dataset`` the trained model of that dataset is used (``$codebrain_results``). Without it, two real BraTS
cases (``../shared/data/real``) are converted and planned in a temporary folder and an **untrained** network of
the configuration's sizes is timed (the cost of inference does not depend on the weights); the output says which.
Prints one figure per line.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from codebrain_seg import paths
from codebrain_seg.converters.brats import convert_brats
from codebrain_seg.inference.codebrain import CodeBrainPredictor
from codebrain_seg.io import read_json, read_nifti
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder, StageOneModel
from codebrain_seg.raw_dataset import image_path, list_cases
from planners.plan_and_preprocess import plan_and_preprocess


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _untrained_predictor(work: Path, real: Path, configuration: str, device: str, batch_size: int | None):
    for kind in ("raw", "preprocessed", "results"):
        os.environ[f"codebrain_{kind}"] = str(work / kind)
    source = work / "source"
    source.mkdir()
    for case in sorted(p.name for p in real.iterdir() if p.is_dir())[:2]:
        (source / case).symlink_to(real / case)
    raw = convert_brats(source, 989, name="BenchImpute").dataset_dir
    out = plan_and_preprocess(989, [configuration])
    plans = read_json(out / "codebrainPlans.json")
    settings = plans["configurations"][configuration]
    config = CodeBrainConfig(in_channels=len(plans["channel_names"]), fsq_levels=settings["fsq_levels"],
                             **settings["network"])
    torch.manual_seed(0)
    predictor = CodeBrainPredictor(StageOneModel(config), PriorEncoder(config), plans, configuration, device,
                                   batch_size, model_info={"untrained": True})
    return predictor, raw, "untrained network of the configuration's sizes (no trained model given)"


def main(argv: list[str] | None = None) -> None:
    """Time ``impute_arrays`` on one real BraTS volume with T2 missing and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=None, help="dataset of a trained model (default: untrained)")
    parser.add_argument("--fold", default="0")
    parser.add_argument("-c", "--configuration", default="2d_cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--real-data", default=str(REPO.parent / "shared" / "data" / "real"))
    args = parser.parse_args(argv)
    real = Path(args.real_data)
    with tempfile.TemporaryDirectory() as work:
        if args.dataset:
            predictor = CodeBrainPredictor.from_results(args.dataset, args.fold, args.configuration, args.device,
                                                        batch_size=args.batch_size)
            raw, model = paths.raw_dataset_dir(args.dataset), f"trained model {predictor.model_info}"
        else:
            if not real.is_dir():
                print(f"skipped: {real} not found")
                return
            predictor, raw, model = _untrained_predictor(Path(work), real, args.configuration, args.device,
                                                         args.batch_size)
        case_id = list_cases(raw)[0]
        volumes = [read_nifti(image_path(raw, case_id, c)) for c in range(predictor.num_channels)]
        images = np.stack([v.data for v in volumes])
        available = [True] * predictor.num_channels
        available[2] = False  # T2 missing
        baseline = _peak_rss_mb()
        seconds = []
        for _ in range(max(args.repeats, 1)):
            start = time.perf_counter()
            predictor.impute_arrays(images, available, volumes[0].affine)
            seconds.append(time.perf_counter() - start)
        start = time.perf_counter()
        predictor.impute_with_confidence(images, available, volumes[0].affine)
        confidence_seconds = time.perf_counter() - start
        network = predictor.configuration["network"]
        parameters = sum(p.numel() for p in predictor.stage_one.parameters()) + sum(
            p.numel() for p in predictor.prior_encoder.parameters())
        print(f"model: {model}")
        print(f"configuration: {args.configuration} {network} crop {predictor.configuration['crop_size']}")
        print(f"parameters_million: {parameters / 1e6:.2f}")
        print(f"volume: {'x'.join(map(str, images.shape[1:]))}, missing: {predictor.channel_names[2]}")
        print(f"device: {args.device}, torch threads: {torch.get_num_threads()}, batch size: {predictor.batch_size}")
        print(f"load_average_1min: {os.getloadavg()[0]:.2f}")
        every = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"seconds_per_volume: {min(seconds):.2f} (best of {len(seconds)}; all {every})")
        print(f"seconds_per_volume_with_confidence: {confidence_seconds:.2f}")
        print(f"peak_rss_mb: {_peak_rss_mb():.0f} (before imputation: {baseline:.0f})")


if __name__ == "__main__":
    main()
