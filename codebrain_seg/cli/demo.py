"""``codebrain_demo [--workdir DIR] [--device cpu|cuda]``: the whole chain on built-in phantom data."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.demo import DEMO_ITERATIONS, ordering_verdict, run_demo


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of codebrain_demo."""
    parser = argparse.ArgumentParser(prog="codebrain_demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("codebrain_demo_workdir"),
                        help="folder for the demo's raw, preprocessed and results folders (rerun resumes)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--iterations", type=int, default=None, help="iterations per training stage")
    args = parser.parse_args(argv)

    def run() -> None:
        result = run_demo(args.workdir, args.device, args.iterations or DEMO_ITERATIONS)
        print("\ncodebrain_demo finished:")
        for name, seconds in result["timings"].items():
            print(f"  {name:<24s} {seconds:6.0f} s")
        headline = result["headline"]
        print("\nimputation, paper protocol, all 14 missing patterns (PSNR dB / SSIM x100 / MAE x1000):")
        for method, scores in headline["imputation"].items():
            print(f"  {method:<12s} {scores['psnr']:6.2f} / {scores['ssim']:5.1f} / {scores['mae']:5.1f}")
        print("segmentation (nnUNetTrainerShort, a minutes-long segmenter), mean WT/TC/ET Dice over the four "
              "one-missing scenarios, and the recovered fraction of the zero-fill -> full gap:")
        for row, dice in headline["segmentation_mean_dice"].items():
            recovered = headline["recovered_fraction"].get(row)
            print(f"  {row:<12s} {dice:6.3f}" + ("" if recovered is None else f"   recovered {recovered:6.2f}"))
        print(f"\n{ordering_verdict(headline)}")
        print("\ntables and figures written:")
        for path in result["files"]:
            print(f"  {path}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
