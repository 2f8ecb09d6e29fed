"""``codebrain_install_model``: install a zip written by ``codebrain_export_model`` into ``$codebrain_results``.

Every member is checked before anything is written (a manifest, paths inside the model folder, SHA-256
checksums); the model folder is extracted under a hidden name beside its target and renamed into place. Predict
with ``codebrain_impute -m $codebrain_results/DatasetXXX_Name/<model folder> -i IN -o OUT``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.run.model_sharing import install_model

PROG = "codebrain_install_model"


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``codebrain_install_model``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("zip", help="a model exported by codebrain_export_model")
    parser.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_install_model``."""
    args = build_parser().parse_args(argv)

    def run() -> None:
        folder = install_model(args.zip, overwrite=args.overwrite)
        print(f"installed {folder}\npredict with: codebrain_impute -m {folder} -i INPUT_FOLDER -o OUTPUT_FOLDER")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
