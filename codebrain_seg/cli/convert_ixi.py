"""``codebrain_convert_ixi SRC -d ID [--name NAME] [--skip-bad] [--overwrite]``: thin twin of convert_ixi."""
from __future__ import annotations

import sys
from typing import Sequence

from codebrain_seg.cli.convert_brats import build_parser, run_converter
from codebrain_seg.converters.ixi import convert_ixi


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_convert_ixi``; returns the exit code."""
    parser = build_parser("codebrain_convert_ixi", "IXI T1/T2/PD files (flat, per modality or per subject folder)",
                          "IXI")
    return run_converter(convert_ixi, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
