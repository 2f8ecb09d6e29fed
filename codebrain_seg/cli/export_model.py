"""``codebrain_export_model``: a trained model as one zip file (final checkpoints, plans, dataset.json, a manifest
with versions, checksums and what the model expects), for ``codebrain_install_model`` on another machine.

Only the final checkpoints of the chosen folds travel (not latest / best, logs, caches or evaluations).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.cli.variant_arguments import add_variant_arguments
from codebrain_seg.run.model_sharing import SHAREABLE, export_model

PROG = "codebrain_export_model"


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``codebrain_export_model``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (137), full or short name of the model")
    parser.add_argument("-f", "--fold", nargs="+", default=["0"], help="fold(s) to export (default 0)")
    parser.add_argument("-c", "--configuration", default=None,
                        help="the model's configuration (default: the only one trained for the fold)")
    parser.add_argument("--method", choices=list(SHAREABLE), default="codebrain", help="the trained method")
    parser.add_argument("--prompts", choices=["learned", "mask"], default="learned",
                        help="copedit: the prompts it was trained with (selects the model folder)")
    parser.add_argument("--layout", choices=["shared", "per_count"], default="shared",
                        help="copedit: the layout it was trained with (selects the model folder)")
    add_variant_arguments(parser, what="select")
    parser.add_argument("-o", "--output", required=True, help="the .zip to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_export_model``."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        written = export_model(args.dataset, args.fold, args.output, args.configuration, args.method,
                               ablation=args.ablation, loss_weights=args.loss_weights, variant=args.variant,
                               code_dim=args.code_dim, prompts=args.prompts, layout=args.layout,
                               overwrite=args.overwrite)
        print(f"wrote {written}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
