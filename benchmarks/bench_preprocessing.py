"""Preprocessing speed and memory on the real BraTS cases: seconds per case and peak resident memory.

Usage: python benchmarks/bench_preprocessing.py [REAL_DATA_DIR]   (default ../shared/data/real)
Prints one figure per line.
"""
from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from codebrain_seg.converters.brats import convert_brats
from codebrain_seg.raw_dataset import load_dataset_json
from planners.experiment_planner import plan_experiment
from planners.fingerprint import extract_fingerprint
from planners.preprocessing import preprocess_dataset

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Convert, plan and preprocess the real cases in a temporary folder and print the figures."""
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data" / "real"
    if not source.is_dir():
        print(f"skipped: {source} not found")
        return
    with tempfile.TemporaryDirectory() as work:
        for kind in ("raw", "preprocessed", "results"):
            os.environ[f"codebrain_{kind}"] = str(Path(work) / kind)

        start = time.perf_counter()
        raw_dir = convert_brats(source, 990, name="BenchBraTS").dataset_dir
        convert_seconds = time.perf_counter() - start
        dataset_json = load_dataset_json(raw_dir)
        start = time.perf_counter()
        fingerprint = extract_fingerprint(raw_dir, dataset_json, num_processes=1)
        fingerprint_seconds = time.perf_counter() - start
        plans = plan_experiment(fingerprint, raw_dir.name)
        out = Path(os.environ["codebrain_preprocessed"]) / raw_dir.name
        start = time.perf_counter()
        cases = preprocess_dataset(raw_dir, out, plans, "2d", num_processes=1)
        preprocess_seconds = time.perf_counter() - start
        n = len(cases)
        print(f"cases: {n}")
        print(f"convert_seconds_per_case: {convert_seconds / n:.3f}")
        print(f"fingerprint_seconds_per_case: {fingerprint_seconds / n:.3f}")
        print(f"preprocess_seconds_per_case: {preprocess_seconds / n:.3f}")
        print(f"peak_rss_mb: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
        size = sum(p.stat().st_size for p in (out / plans["configurations"]["2d"]["data_identifier"]).iterdir())
        print(f"preprocessed_mb_per_case: {size / n / 1e6:.1f}")


if __name__ == "__main__":
    main()
