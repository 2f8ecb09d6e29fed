"""Run every benchmark script of this folder and print one figure per line, ``<benchmark>.<figure>: <value>``.

Usage: python benchmarks/run_all.py [--device cpu|cuda] [--only NAME ...]

Each ``bench_*.py`` runs in its own process (its peak memory is its own) and prints ``figure: value`` lines;
they are passed on prefixed with the benchmark's name. A benchmark that fails is reported with its exit code
and the others still run; the exit code is then 1. About 12 minutes on a 2-core CPU; the real-data benchmarks
read ``../shared/data/real`` and say "skipped" without it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmark_scripts() -> list[Path]:
    """The benchmark scripts of this folder, in name order."""
    return sorted(HERE.glob("bench_*.py"))


def main() -> int:
    """Run the benchmarks; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="device for the training and imputation benchmarks")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (e.g. training imputation)")
    args = parser.parse_args()
    scripts = benchmark_scripts()
    if args.only:
        scripts = [script for script in scripts if script.stem.removeprefix("bench_") in args.only]
        if not scripts:
            parser.error(f"no benchmark named {args.only}; known: "
                         f"{[s.stem.removeprefix('bench_') for s in benchmark_scripts()]}")
    failed = False
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        command = [sys.executable, str(script)]
        if name in ("training", "imputation"):
            command += ["--device", args.device]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        for line in result.stdout.splitlines():
            if ":" in line:
                print(f"{name}.{line.strip()}", flush=True)
        if result.returncode != 0:
            failed = True
            last = result.stderr.strip().splitlines()[-1:] or ["(no error output)"]
            print(f"{name}.failed: exit code {result.returncode}: {last[0]}", flush=True)
        print(f"{name}.benchmark_seconds: {time.perf_counter() - start:.0f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
