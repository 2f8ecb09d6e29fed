"""``codebrain_convert_cardiac SRC -d ID [--name NAME] [--skip-bad] [--overwrite]``: thin twin of convert_cardiac."""
from __future__ import annotations

import sys
from typing import Sequence

from codebrain_seg.cli.convert_brats import build_parser, run_converter
from codebrain_seg.converters.cardiac import DEFAULT_NAME, convert_cardiac


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``codebrain_convert_cardiac``; returns the exit code."""
    parser = build_parser("codebrain_convert_cardiac", "short-axis cardiac cine MRI (ACDC and / or M&Ms subject "
                          "folders, auto-detected)", DEFAULT_NAME)
    return run_converter(convert_cardiac, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
