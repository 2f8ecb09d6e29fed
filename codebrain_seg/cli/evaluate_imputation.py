"""``codebrain_evaluate_imputation``: PSNR / SSIM / MAE of every method for every missing-sequence pattern."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.cli.impute import add_model_variant_arguments
from codebrain_seg.networks.codebrain import CODE_DECODINGS
from evaluation.imputation.evaluate import PROTOCOLS, evaluate_imputation

PROG = "codebrain_evaluate_imputation"


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``codebrain_evaluate_imputation``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Drop every subset of sequences (2^C - 2 patterns) from complete cases, impute them with "
                    "each method and score them: paper protocol (2D slices, whole image, the paper's tables) "
                    "and/or volume protocol (BraSyn-like 3D, brain / tumour / healthy). Writes CSV, JSON, "
                    "Markdown tables and PNG figures under $codebrain_results/DatasetXXX_Name/"
                    "CodeBrain__codebrainPlans__CONFIG/fold_F/imputation_eval/CASES/ (a variant: its own "
                    "CodeBrain-<tags>__... folder, as codebrain_train named it).")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (137), full or short name")
    parser.add_argument("-f", "--fold", default="0", help="fold (default 0)")
    parser.add_argument("-c", "--configuration", default=None,
                        help="plans configuration (default: the one trained for this fold, else 2d with a CUDA "
                             "device and 2d_cpu without, as codebrain_train)")
    parser.add_argument("--cases", default="val",
                        help="val (the fold's validation cases, default), test (imagesTs) or a folder of "
                             "CASE_XXXX.nii.gz files with every sequence present")
    parser.add_argument("--protocol", choices=["paper", "volume", "both"], default="both",
                        help="paper (2D, middle slices), volume (3D, BraSyn-like) or both (default)")
    parser.add_argument("--methods", "--method", type=_list, default=["codebrain", "zero", "mean"],
                        help="comma-separated registered methods (default codebrain,zero,mean; also regression, "
                             "copedit, copedit-mask)")
    parser.add_argument("--patterns", type=_list, default=None,
                        help="comma-separated availability bit strings, e.g. 0111,1000 (default: all)")
    parser.add_argument("--device", default="cpu", help="torch device for learned methods (default cpu)")
    parser.add_argument("--checkpoint", choices=["final", "best", "latest"], default="final",
                        help="checkpoint of learned methods (default final)")
    parser.add_argument("--batch-size", type=int, default=None, help="slices per forward pass")
    parser.add_argument("--figure-cases", type=int, default=1, help="cases shown in the figures (default 1)")
    parser.add_argument("-o", "--output", default=None, help="output folder (default: see above)")
    parser.add_argument("--evaluation-slices", type=int, default=None,
                        help="middle slices per case scored by the paper protocol (default: the plans')")
    parser.add_argument("--code-decoding", choices=list(CODE_DECODINGS), default="expected",
                        help="codebrain: Stage II's levels decoded to their expected value (default, as "
                             "codebrain_impute) or counted as the reference does (count)")
    add_model_variant_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_evaluate_imputation``; exit code 2 with one line on a user error."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        fold = int(args.fold) if str(args.fold).isdigit() else args.fold
        protocols = list(PROTOCOLS) if args.protocol == "both" else [args.protocol]
        out = evaluate_imputation(args.dataset, fold, args.configuration, args.cases, protocols, args.methods,
                                  device=args.device, checkpoint=args.checkpoint, batch_size=args.batch_size,
                                  output_dir=Path(args.output) if args.output else None, patterns=args.patterns,
                                  figure_cases=args.figure_cases, evaluation_slices=args.evaluation_slices,
                                  ablation=args.ablation, loss_weights=args.loss_weights, variant=args.variant,
                                  code_dim=args.code_dim, source_rule=args.source_rule,
                                  code_decoding=args.code_decoding)
        print(f"imputation evaluation: {out / 'tables.md'}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
