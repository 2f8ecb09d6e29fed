"""``codebrain_demo [--workdir DIR] [--device cpu|cuda]``: the whole chain on built-in phantom data."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from codebrain_seg.cli.common import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of codebrain_demo."""
    parser = argparse.ArgumentParser(prog="codebrain_demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("codebrain_demo_workdir"),
                        help="folder for the demo's raw, preprocessed and results folders (rerun resumes)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per training stage")
    args = parser.parse_args(argv)

    def run() -> None:
        from codebrain_seg.demo import DEMO_ITERATIONS, run_demo

        result = run_demo(args.workdir, args.device, args.iterations or DEMO_ITERATIONS)
        print("\ncodebrain_demo finished:")
        for name, seconds in result["timings"].items():
            print(f"  {name:<24s} {seconds:6.0f} s")
        print(f"  imputation tables and figures:   {result['imputation']}")
        print(f"  segmentation tables and figure:  {result['segmentation']}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
