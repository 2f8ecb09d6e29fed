"""``codebrain_make_demo_dataset``: write the built-in BraTS-like phantom as an nnU-Net raw dataset."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from codebrain_seg.cli.common import run_cli
from codebrain_seg.demo_data import (
    DEFAULT_NAME,
    DEFAULT_NUM_CASES,
    DEFAULT_SHAPE,
    make_demo_dataset,
)

PROG = "codebrain_make_demo_dataset"


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of ``codebrain_make_demo_dataset``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate BraTS-like phantom subjects (T1, T1Gd, T2, FLAIR and tumour labels) from code and "
                    "write them to $codebrain_raw/DatasetXXX_NAME in nnU-Net v2 raw format.")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="dataset id, 1..999")
    parser.add_argument("--cases", type=int, default=DEFAULT_NUM_CASES,
                        help=f"number of subjects (default {DEFAULT_NUM_CASES})")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("X", "Y", "Z"),
                        help="grid size in voxels; spacing follows so the field of view stays the same "
                             f"(default {' '.join(map(str, DEFAULT_SHAPE))})")
    parser.add_argument("--seed", type=int, default=0, help="subject i uses seed + i (default 0)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"short dataset name (default {DEFAULT_NAME})")
    parser.add_argument("--overwrite", action="store_true", help="replace the dataset if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_make_demo_dataset``; returns the exit code (2 with one line on a user error)."""
    args = build_parser().parse_args(argv)

    def make() -> None:
        path = make_demo_dataset(args.dataset_id, num_cases=args.cases, shape=tuple(args.shape), seed=args.seed,
                                 name=args.name, overwrite=args.overwrite)
        print(f"Wrote {args.cases} demo cases ({'x'.join(map(str, args.shape))} voxels) to {path}")

    return run_cli(make)


if __name__ == "__main__":
    sys.exit(main())
