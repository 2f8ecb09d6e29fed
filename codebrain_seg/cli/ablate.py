"""``codebrain_ablate -d D -f F``: train, evaluate and tabulate the CodeBrain papers' ablations on one fold."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from codebrain_seg.cli.common import run_cli
from codebrain_seg.errors import InputError
from evaluation.ablation.groups import GROUPS, parse_groups
from evaluation.ablation.run import run_ablations

PROG = "codebrain_ablate"


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``codebrain_ablate``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train the variants each ablation group needs (codebrain_train's trainer; finished stages are "
                    "reused, never retrained), score them with the paper protocol (Stage I reconstruction from "
                    "oracle codes and/or Stage II imputation) and write tables shaped like the papers' ablation "
                    "tables (Markdown, CSV, JSON; PSNR against d as PNG) to $codebrain_results/DatasetXXX_Name/"
                    "ablations__codebrainPlans__CONFIG/fold_F/CASES/.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (137), full or short name")
    parser.add_argument("-f", "--fold", required=True, type=int, help="fold of splits_final.json")
    parser.add_argument("-c", "--configuration", default=None,
                        help="plans configuration (default: 2d with a GPU, 2d_cpu without)")
    parser.add_argument("--which", default="rec_fc,grading",
                        help="comma-separated groups, or all (default rec_fc,grading): "
                             + "; ".join(f"{name}: {group.title} [{group.source}]" for name, group in GROUPS.items()))
    parser.add_argument("--iterations", type=int, default=None,
                        help="iterations per trained stage (default: the plans'); finished stages are kept as they "
                             "are")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto = cuda when available, else cpu")
    parser.add_argument("--cases", default="val",
                        help="val (the fold's validation cases, default), test (imagesTs) or a folder of complete "
                             "cases")
    parser.add_argument("--evaluation-slices", type=int, default=None,
                        help="middle slices scored per case (default: the plans', 80 as in the paper)")
    parser.add_argument("--batch-size", type=int, default=None, help="slices per forward pass in the evaluations")
    parser.add_argument("--seed", type=int, default=1337, help="training seed (of the first seed with --seeds)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="trainings per arm (default 1): seed s = SEED + s, seed 0 in the usual results folder, "
                             "seed s > 0 in its -seed<s> folder (each cached and resumable); the tables give the "
                             "mean and SD over seeds, and an ordering counts only when its gap exceeds the spread")
    parser.add_argument("--num-threads", type=int, default=None,
                        help="torch CPU threads for training and evaluation (default: the trainer's choice)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="training precision of the stages trained now (default auto: bf16 where the device "
                             "computes it natively, else fp32); the tables name each arm's. Precisions share the "
                             "results folders, so a comparison runs each precision under its own $codebrain_results: "
                             "a finished stage of another precision is refused, not reused")
    parser.add_argument("-o", "--output", default=None, help="folder of the tables (default: see above)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_ablate``; exit code 2 with one line on a user error."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        parse_groups(args.which)  # an unknown group fails here, before any data is touched
        if args.iterations is not None and args.iterations < 1:
            raise InputError(f"--iterations must be >= 1, got {args.iterations}")
        if args.seeds < 1:
            raise InputError(f"--seeds must be >= 1 (trainings per arm), got {args.seeds}")
        options = {"seed": args.seed, "precision": args.precision}
        if args.num_threads is not None:
            if args.num_threads < 1:
                raise InputError(f"--num-threads must be >= 1, got {args.num_threads}")

            torch.set_num_threads(args.num_threads)  # the evaluations; the trainer sets its own from the option
            options["num_threads"] = args.num_threads
        out = run_ablations(args.dataset, args.fold, args.configuration, args.which, iterations=args.iterations,
                            device=args.device, cases=args.cases, evaluation_slices=args.evaluation_slices,
                            batch_size=args.batch_size, output_dir=Path(args.output) if args.output else None,
                            seeds=args.seeds, **options)
        print(f"ablation tables: {out / 'ablations.md'}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
