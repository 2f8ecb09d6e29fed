"""codebrain_seg/cli/ablate.py: the --seeds option and its errors, without data."""
from __future__ import annotations

import pytest

from codebrain_seg.cli.ablate import build_parser
from codebrain_seg.cli.ablate import main as ablate_main


def test_seeds_default_to_one_and_zero_is_refused_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert build_parser().parse_args(["-d", "1", "-f", "0"]).seeds == 1  # today's behaviour
    assert build_parser().parse_args(["-d", "1", "-f", "0", "--seeds", "3"]).seeds == 3
    for bad in ("0", "-2"):
        # the command fails before touching any data (no dataset 999 exists)
        assert ablate_main(["-d", "999", "-f", "0", "--which", "fc_control", "--seeds", bad]) == 2
        error = capsys.readouterr().err
        assert error == f"error: --seeds must be >= 1 (trainings per arm), got {bad}\n"
