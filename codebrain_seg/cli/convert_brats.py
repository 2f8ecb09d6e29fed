"""``codebrain_convert_brats SRC -d ID [--name NAME] [--skip-bad] [--overwrite]``: thin twin of convert_brats."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from codebrain_seg.case_checks import ConversionReport
from codebrain_seg.cli.common import run_cli
from codebrain_seg.converters.brats import convert_brats


def build_parser(prog: str, what: str, default_name: str) -> argparse.ArgumentParser:
    """Argument parser shared by the converter commands."""
    parser = argparse.ArgumentParser(prog=prog, description=f"Convert {what} into an nnU-Net v2 raw dataset "
                                                            f"($codebrain_raw/DatasetXXX_Name).")
    parser.add_argument("source", type=Path, help=f"source folder: {what}")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="dataset id, 1..999")
    parser.add_argument("--name", default=None, help=f"short dataset name (default: {default_name})")
    parser.add_argument("--skip-bad", action="store_true",
                        help="convert the good cases when some fail the checks (default: write nothing)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    return parser


def run_converter(convert: Callable[..., ConversionReport], args: argparse.Namespace) -> int:
    """Call a converter, print its summary; user errors -> message on stderr and exit code 2."""
    kwargs = {"skip_bad": args.skip_bad, "overwrite": args.overwrite}
    if args.name is not None:
        kwargs["name"] = args.name
    return run_cli(lambda: print(convert(args.source, args.dataset_id, **kwargs).summary()))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_convert_brats``; returns the exit code."""
    parser = build_parser("codebrain_convert_brats", "a BraTS folder (2018-2021 or 2023+ naming, one folder per "
                          "case)", "BraTS<year> from the source folder name, else BraTS2021 / BraTS2023")
    return run_converter(convert_brats, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
